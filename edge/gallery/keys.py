"""Where the gallery lives and which key opens it; key rotation.

The key-encryption key (KEK) comes, in order, from a systemd credential
(`LoadCredential=facegate-kek:/path` → `$CREDENTIALS_DIRECTORY/facegate-kek`), from
`[gallery] key_file`, or from `<data_dir>/kek.key`. A key file beside the data protects nothing
if the disk is taken, so creating one prints a warning; it exists so the first run works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.config import Config
from edge.errors import KeyfileError
from edge.gallery.crypto import generate_kek_file, kek_id, read_kek_file
from edge.gallery.db import GALLERY_FILE

if TYPE_CHECKING:  # the store imports numpy; key lookup alone must not need it
    from edge.gallery.store import GalleryStore

CREDENTIAL_NAME = "facegate-kek"
DEFAULT_KEY_FILE = "kek.key"


@dataclass(frozen=True, slots=True)
class KeySource:
    kek: bytes
    origin: str  # where it came from, for `keys status` (never the key itself)
    path: Path


def data_dir_for(arg: Path | None, cfg: Config) -> Path:
    if arg is not None:
        return arg
    if cfg.gallery.data_dir:
        return Path(cfg.gallery.data_dir)
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "share" / "facegate"


def systemd_credential() -> Path | None:
    """`$CREDENTIALS_DIRECTORY/facegate-kek` when systemd handed the key over (`LoadCredential=`)."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).exists():
        return Path(credentials) / CREDENTIAL_NAME
    return None


def key_path_for(data_dir: Path, cfg: Config) -> tuple[Path, str]:
    """The credential first: the packaged key file is root's (0600), the service reads its copy."""
    credential = systemd_credential()
    if credential is not None:
        return credential, f"systemd credential {CREDENTIAL_NAME}"
    if cfg.gallery.key_file:
        return Path(cfg.gallery.key_file), f"key file {cfg.gallery.key_file}"
    path = data_dir / DEFAULT_KEY_FILE
    return path, f"key file {path}"


def load_key(data_dir: Path, cfg: Config, create: bool, warn: Callable[[str], None] = lambda _m: None) -> KeySource:
    """The KEK for `data_dir`; with `create`, a new data dir gets a generated key (and a warning)."""
    path, origin = key_path_for(data_dir, cfg)
    if path.exists():
        return KeySource(read_kek_file(path), origin, path)
    if create and not (data_dir / GALLERY_FILE).exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        kek = generate_kek_file(path)
        warn(
            f"initialised a new gallery in {data_dir} with a generated key at {path}. Anyone who can "
            f"read that file can read the gallery: keep it on another device or pass it as a systemd "
            f"credential (LoadCredential={CREDENTIAL_NAME}:/path/to/key)."
        )
        return KeySource(kek, origin, path)
    if (data_dir / GALLERY_FILE).exists():
        raise KeyfileError(f"{path}: key file missing; the gallery in {data_dir} cannot be opened without it")
    raise KeyfileError(f"{data_dir}: no gallery here yet; enroll someone or run `facegate keys init`")


def rotate_keys(data_dir: Path, key: KeySource, rotate_kek: bool, warn: Callable[[str], None]) -> None:
    """New device key (all person keys re-wrapped in one transaction); with `rotate_kek`, also a
    new key file: the gallery first accepts both keys, the file is swapped atomically, then the
    old key's wrap is dropped — a crash at any point leaves a gallery one of the two files opens.
    """
    from edge.gallery import admin
    from edge.gallery.store import GalleryStore

    with GalleryStore.open(data_dir, key.kek) as store:
        _finish_interrupted_kek_rotation(store, key, warn)
        admin.rotate_device_key(store)
        if not rotate_kek:
            return
        if key.origin.startswith("systemd credential"):
            raise KeyfileError("keys rotate --kek: the key is a systemd credential; rotate it where it is stored")
        new_path = key.path.with_name(key.path.name + ".new")
        new_path.unlink(missing_ok=True)
        new_kek = generate_kek_file(new_path)
        old_id = admin.rotate_kek(store, new_kek)
        os.replace(new_path, key.path)
        admin.forget_kek(store, old_id)
    warn(f"new key written to {key.path}; copies of the old key no longer open this gallery")


def _finish_interrupted_kek_rotation(store: GalleryStore, key: KeySource, warn: Callable[[str], None]) -> None:
    """A `--kek` rotation cut short leaves two key wraps (and maybe `<key>.new`). The key file in
    place is the one that opened the gallery, so it wins: every other wrap is dropped, and a left
    over `.new` file — which never replaced the key file — is deleted."""
    from edge.gallery import admin

    current = kek_id(key.kek)
    others = [k for k in store.status()["kek_ids"] if k != current]
    for other in others:
        admin.forget_kek(store, other)
    leftover = key.path.with_name(key.path.name + ".new")
    if others or leftover.exists():
        leftover.unlink(missing_ok=True)
        warn(f"finished an interrupted key rotation: {key.path} is the gallery's only key again")
