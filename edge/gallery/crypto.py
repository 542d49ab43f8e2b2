"""Envelope encryption for the gallery: key files, key wrapping, sealed records.

Three key levels, so that each operation rewrites as little as possible:
- KEK (key-encryption key): outside the database, in a 0600 key file or a systemd credential.
  Rotating it rewrites one row.
- DK (device key): random, stored only wrapped by the KEK. It wraps the person keys and keys the
  name tags. Rotating it rewrites two short columns per person.
- PK (person key): random, one per person, stored only wrapped by the DK; it seals that person's
  profile and templates. Destroying it (crypto-erase) leaves every other copy of that person's
  records (backups, old WAL frames, disk blocks) as noise.

Everything is AES-256-GCM with a random 96-bit nonce stored in front of the ciphertext. The AAD
says what the bytes are and where they belong (purpose, table, row uid, schema version), so a
ciphertext copied to another row, person or purpose fails authentication instead of decrypting
as somebody else. Random nonces are safe here: no key seals anywhere near 2^32 messages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.errors import CryptoError, KeyfileError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
WRAPPED_KEY_BYTES = KEY_BYTES + SEAL_OVERHEAD
_KEK_ID_CONTEXT = b"facegate-kek-id"


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def kek_id(kek: bytes) -> str:
    """A public fingerprint of a KEK, so errors and `status` can name keys without storing them."""
    return hashlib.sha256(_KEK_ID_CONTEXT + kek).hexdigest()[:16]


def aad(*parts: str | bytes | int) -> bytes:
    """Associated data from parts, each length-prefixed so that no two part lists collide.

    Length-prefixing composes: `aad(a, b) == aad(a) + aad(b)`, which lets hot loops precompute
    the constant head once and append only the per-row part.
    """
    out = bytearray()
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def seal(aead: AESGCM, plaintext: bytes, associated: bytes) -> bytes:
    """nonce ‖ ciphertext ‖ tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, associated)


def unseal(aead: AESGCM, sealed: bytes, associated: bytes, what: str) -> bytes:
    """The plaintext of `seal`; CryptoError naming `what` when the bytes or their place changed."""
    view = memoryview(sealed)
    try:
        return aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError) as exc:
        raise CryptoError(f"{what} fails authentication: it was altered, truncated, or copied from another record") from exc


def _aead(key: bytes | AESGCM) -> AESGCM:
    # Callers that wrap many keys pass one AESGCM: building one costs as much as a decryption.
    return key if isinstance(key, AESGCM) else AESGCM(key)


def wrap_key(wrapping_key: bytes | AESGCM, key: bytes, associated: bytes) -> bytes:
    return seal(_aead(wrapping_key), key, associated)


def unwrap_key(wrapping_key: bytes | AESGCM, wrapped: bytes, associated: bytes, what: str) -> bytes:
    key = unseal(_aead(wrapping_key), wrapped, associated, what)
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{what} holds a {len(key)}-byte key, expected {KEY_BYTES}")
    return key


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A subkey for one purpose, so that no key is ever used for two different jobs."""
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None, info=purpose).derive(key)


def keyed_tag(key: bytes, text: str) -> bytes:
    """HMAC-SHA256: equal texts give equal tags, and without the key the tag reveals nothing."""
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _parse_kek(raw: bytes, path: Path) -> bytes:
    if len(raw) == KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise KeyfileError(
        f"{path}: not a key file (expected {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex characters, "
        f"got {len(raw)} bytes); point facegate at the right file or create one with `facegate keys init`"
    )


def is_systemd_credential(path: Path) -> bool:
    """`path` is in $CREDENTIALS_DIRECTORY: systemd made it (0400, an ACL for the unit's user), so
    the owner and mode checks of a key file do not apply."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return bool(directory) and path.resolve().parent == Path(str(directory)).resolve()


def _check_private(path: Path, st: os.stat_result) -> None:
    if st.st_mode & 0o077:
        raise KeyfileError(
            f"{path}: key file is accessible to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run `chmod 600 {path}` (and consider the key compromised if others could read it)"
        )
    if st.st_uid != os.geteuid():
        raise KeyfileError(
            f"{path}: key file is owned by uid {st.st_uid}, not by the user facegate runs as (uid {os.geteuid()}); "
            f"run `chown {os.geteuid()} {path}`"
        )


def _not_yours(path: Path, exc: OSError) -> str:
    """What to do about a key file this user may not open. The package keeps its key root's own
    (the service reads systemd's copy), so an admin command run as anyone else lands here."""
    try:
        root_owned = os.stat(path).st_uid == 0
    except OSError:
        root_owned = False
    if root_owned and os.geteuid() != 0:
        return (
            f"{path}: cannot open key file ({exc.strerror}): it is root's, as the package installs it; "
            f"run admin commands as root (sudo facegate gallery ...); the service gets the key as a systemd credential"
        )
    return f"{path}: cannot open key file ({exc.strerror or exc}); check its owner and permissions"


def read_kek_file(path: Path) -> bytes:
    """The KEK in `path` (a key file or a systemd credential), refusing files others can read.

    The checks run on the opened descriptor, so a file swapped between check and read is
    still the file that was checked. Files in $CREDENTIALS_DIRECTORY skip the owner and mode
    checks: systemd writes them owned by root, mode 0400, with an ACL that lets the unit's user
    read them (so the group bits show the ACL mask), in a directory only that unit can enter.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise KeyfileError(f"{path}: key file not found; restore it from your key backup (a new key cannot open an existing gallery)") from exc
    except PermissionError as exc:
        raise KeyfileError(_not_yours(path, exc)) from exc
    except OSError as exc:
        raise KeyfileError(f"{path}: cannot open key file ({exc.strerror or exc}); check its owner and permissions") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyfileError(f"{path}: not a regular file; a key file holds {KEY_BYTES} raw bytes or {2 * KEY_BYTES} hex characters")
        if not is_systemd_credential(path):
            _check_private(path, st)
        raw = os.read(fd, 4 * KEY_BYTES)
    finally:
        os.close(fd)
    return _parse_kek(raw, path)


def generate_kek_file(path: Path) -> bytes:
    """Writes a new random KEK to `path` (hex, mode 0600) and returns it; never overwrites.

    Written to a temporary sibling, fsynced and renamed, so a crash leaves either no key file or
    a whole one, never a truncated key that would lock the gallery for good.
    """
    path = Path(path)
    if path.exists():
        raise KeyfileError(f"{path}: already exists; refusing to overwrite a key (move it away first if you really mean to)")
    kek = new_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeyfileError(f"{path}: cannot create key file ({exc.strerror or exc}); check the directory exists and is writable") from exc
    try:
        os.write(fd, kek.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename itself must survive a power cut
    return kek


def fsync_dir(folder: Path) -> None:
    """Makes a rename or link inside `folder` durable (POSIX needs the directory synced too)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
