"""Who may talk to the local ZeroMQ API: CURVE keys, the allow-list, and the server sockets' options.

With `[zmq] curve_secret_key_file` set, both server sockets (PUB events, ROUTER control) are
CURVE servers: traffic is encrypted and a client completes the handshake only if its public key
is in `[zmq] allowed_clients_dir`, checked by a ZAP handler (pyzmq's ThreadAuthenticator) on the
socket's context. Without CURVE the config only accepts endpoints the host alone can reach
(edge/config/rules.py): ipc:// files made 0600, loopback tcp://.

Key files are ZeroMQ's own certificate format (`zmq.auth.create_certificates`, czmq's
`zcert`), so a client in any language can use the keys `facegate zmq keygen` writes:
`NAME.key` holds the public key, `NAME.key_secret` both (mode 0600). The allow-list is a
directory of public `*.key` files; it is re-read when the directory changes, so `facegate zmq
allow` and deleting a file take effect at the next connection, without a restart.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from edge.config import ZmqConfig
from edge.errors import KeyfileError, OutputError
from edge.gallery.crypto import is_systemd_credential

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"facegate"
PUBLIC_SUFFIX, SECRET_SUFFIX = ".key", ".key_secret"
_HEADER = "#   ZeroMQ CURVE {kind} Certificate, written by `facegate zmq keygen`\n"
_SECRET_WARNING = "#   Keep this file private (mode 0600): whoever holds it is this key's owner.\n"


@dataclass(frozen=True, slots=True)
class ServerKeys:
    public: bytes  # Z85, 40 characters
    secret: bytes = field(repr=False)


# The contexts whose ZAP handler runs: a CURVE socket on any other context would let every key in
# (libzmq accepts any client when no ZAP handler answers), so `server_socket` refuses to make one.
_GUARDED: weakref.WeakKeyDictionary[zmq.Context[Any], ServerKeys] = weakref.WeakKeyDictionary()


def _certificate(kind: str, public: bytes, secret: bytes | None) -> str:
    lines = [_HEADER.format(kind=kind), _SECRET_WARNING if secret else "", "\nmetadata\ncurve\n",
             f'    public-key = "{public.decode()}"\n']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"\n')
    return "".join(lines)


def _write_new(path: Path, text: str, mode: int) -> None:
    # O_EXCL: a key is never overwritten (a lost server key locks every client out; a lost client
    # key only that client), and the mode is set at creation, not after.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError as exc:
        raise KeyfileError(f"{path}: already exists; keys are never overwritten (remove it first to replace it)") from exc
    except OSError as exc:
        raise KeyfileError(f"{path}: cannot create ({exc.strerror or exc})") from exc
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(text)


def write_keypair(prefix: Path) -> tuple[Path, Path, str]:
    """`<prefix>.key` (public, 0644) and `<prefix>.key_secret` (0600); returns them and the public key."""
    public, secret = zmq.curve_keypair()
    public_path, secret_path = Path(f"{prefix}{PUBLIC_SUFFIX}"), Path(f"{prefix}{SECRET_SUFFIX}")
    for path in (public_path, secret_path):  # both checked first: never half a new pair beside half an old one
        if path.exists():
            raise KeyfileError(f"{path}: already exists; keys are never overwritten (remove it first to replace it)")
    _write_new(secret_path, _certificate("**Secret**", public, secret), 0o600)
    _write_new(public_path, _certificate("Public", public, None), 0o644)
    return public_path, secret_path, public.decode()


def _load(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyfileError(f"{path}: not a ZeroMQ CURVE certificate ({exc}); make one with `facegate zmq keygen`") from exc
    if public is None or len(public) != 40:
        raise KeyfileError(f"{path}: no 40-character public-key line; make one with `facegate zmq keygen`")
    return public, secret


def read_public_key(path: Path) -> bytes:
    return _load(path)[0]


def read_server_keys(path: Path) -> ServerKeys:
    """The daemon's key pair, from a file nobody else can read (a systemd credential is exempt:
    systemd makes it 0400 with an ACL for the unit's user)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyfileError(f"zmq.curve_secret_key_file: {path}: cannot read ({exc.strerror or exc})") from exc
    public, secret = _load(path)
    if secret is None or len(secret) != 40:
        raise KeyfileError(f"zmq.curve_secret_key_file: {path} holds no secret key (is it the public .key file?)")
    if st.st_mode & 0o077 and not is_systemd_credential(path):
        raise KeyfileError(f"zmq.curve_secret_key_file: {path} is accessible to group or others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}` and make a new key if others could read it")
    return ServerKeys(public, secret)


def _check_allow_dir(directory: Path) -> None:
    try:
        st = directory.stat()
    except OSError as exc:
        raise KeyfileError(f"zmq.allowed_clients_dir: {directory}: cannot read ({exc.strerror or exc})") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KeyfileError(f"zmq.allowed_clients_dir: {directory} is not a directory")
    if st.st_mode & 0o022:
        # Whoever can write here can let any key in.
        raise KeyfileError(f"zmq.allowed_clients_dir: {directory} is writable by group or others (mode "
                           f"{stat.S_IMODE(st.st_mode):04o}); run `chmod go-w {directory}`")


class AllowList:
    """The ZAP handler's CURVE check: is this client key in the directory? Never raises (an
    exception on the authenticator's thread would end it and leave every handshake unanswered)."""

    def __init__(self, directory: Path) -> None:
        _check_allow_dir(directory)
        self.directory = directory
        self._lock = threading.Lock()
        self._stamp: int | None = None
        self._keys: frozenset[bytes] = frozenset()
        self.refused, self._last_logged = 0, -60.0
        self.keys()

    def keys(self) -> frozenset[bytes]:
        with self._lock:
            try:
                _check_allow_dir(self.directory)
                stamp = self.directory.stat().st_mtime_ns
                if stamp != self._stamp:
                    self._keys, self._stamp = self._read(), stamp
            except KeyfileError as exc:
                log.error("zmq allow-list refused, no client is let in: %s", exc)
                self._keys, self._stamp = frozenset(), None
            return self._keys

    def _read(self) -> frozenset[bytes]:
        found = set()
        for path in sorted(self.directory.glob(f"*{PUBLIC_SUFFIX}")):
            try:
                found.add(read_public_key(path))
            except KeyfileError as exc:
                log.warning("zmq allow-list: %s skipped: %s", path.name, exc)
        return frozenset(found)

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            allowed = key in self.keys()
        except Exception:  # noqa: BLE001 - see the class docstring
            log.exception("zmq allow-list check failed")
            return False
        if not allowed:
            self.refused += 1
            now = time.monotonic()
            # One line a minute at most: a client retrying its handshake must not flood the journal.
            if now - self._last_logged >= 60.0:
                self._last_logged = now
                log.warning("zmq: refused a client key not in %s: %s (%d refused so far)", self.directory,
                            key.decode(errors="replace"), self.refused)
        return allowed


def allow_client(directory: Path, public_key_file: Path) -> tuple[Path, bool]:
    """Copies the public key of `public_key_file` (a .key or .key_secret file) into the allow-list
    as `<directory>/<name>.key`; (path, False) when that key was already allowed."""
    public = read_public_key(public_key_file)
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_allow_dir(directory)
    for existing in directory.glob(f"*{PUBLIC_SUFFIX}"):
        try:
            if read_public_key(existing) == public:
                return existing, False
        except KeyfileError:
            continue
    name = public_key_file.name.removesuffix(SECRET_SUFFIX).removesuffix(PUBLIC_SUFFIX) or "client"
    target = directory / f"{name}{PUBLIC_SUFFIX}"
    # Only the public part is copied: a secret key handed over by mistake does not land here.
    _write_new(target, _certificate("Public", public, None), 0o644)
    return target, True


def start_authenticator(ctx: zmq.Context[Any], zcfg: ZmqConfig) -> ThreadAuthenticator | None:
    """The ZAP handler on `ctx` when CURVE is configured (None otherwise); stop it after the sockets."""
    if not zcfg.curve_secret_key_file:
        return None
    keys = read_server_keys(Path(zcfg.curve_secret_key_file))
    allow = AllowList(Path(zcfg.allowed_clients_dir))
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("facegate.zmq.auth"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN.decode(), credentials_provider=allow)
    _GUARDED[ctx] = keys
    log.info("zmq: CURVE on, %d allowed client key(s) in %s", len(allow.keys()), allow.directory)
    return auth


def server_socket(ctx: zmq.Context[Any], kind: int, endpoint: str, zcfg: ZmqConfig) -> zmq.Socket[Any]:
    """A bound server socket: bounded messages, CURVE when configured, an ipc:// file only its
    owner can open."""
    sock = ctx.socket(kind)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        # libzmq drops a peer whose message header says more than this, before allocating it.
        sock.setsockopt(zmq.MAXMSGSIZE, zcfg.max_message_bytes)
        if zcfg.curve_secret_key_file:
            keys = _GUARDED.get(ctx)
            if keys is None:
                raise OutputError("zmq: CURVE is configured but no authenticator runs on this context (start_authenticator first)")
            sock.curve_secretkey, sock.curve_publickey = keys.secret, keys.public
            sock.zap_domain = ZAP_DOMAIN
            sock.curve_server = True
        _bind(sock, endpoint)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind(sock: zmq.Socket[Any], endpoint: str) -> None:
    ipc = endpoint.removeprefix("ipc://") if endpoint.startswith("ipc://") else None
    # The socket file is created 0600 (umask for the moment of the bind), not chmod-ed after:
    # there is no window in which another local user could connect.
    previous = os.umask(0o177) if ipc else None
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise OutputError(f"zmq: cannot bind {endpoint} ({exc})") from exc
    finally:
        if previous is not None:
            os.umask(previous)
    if ipc:
        os.chmod(ipc, 0o600)
