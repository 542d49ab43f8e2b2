"""Shared by the sync tests and bench/sync.py: a hub key pair, synthetic persons, a bundle maker."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.gallery.crypto import generate_kek_file
from edge.gallery.records import PersonProfile
from edge.gallery.store import GalleryStore
from edge.gallery.sync_apply import SyncPerson
from edge.identity import DeviceIdentity
from sync.bundle import BundleContent, build_bundle

MODEL = "sync_test"
DIM = 64


def person(i: int, n_templates: int = 2, dim: int = DIM, uid: str | None = None, groups: tuple[str, ...] = ("staff",)) -> SyncPerson:
    vectors = np.random.default_rng(i).standard_normal((n_templates, dim)).astype(np.float32)
    return SyncPerson(uid or f"{i:032x}", PersonProfile(name=f"person {i:05d}", groups=groups, consent_text="agreed at HQ"), MODEL, tuple(vectors), (0.5,) * n_templates)


@dataclass
class Hub:
    """The hub's side of the tests: its signing key and the next sequence per scope."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seqs: dict[str, int] = field(default_factory=dict)

    def bundle(self, scope: str, devices: dict[str, DeviceIdentity], upserts=(), removes=(), erases=(), full: bool = False, seq: int | None = None) -> bytes:
        last = self.seqs.get(scope, 0)
        seq = seq if seq is not None else last + 1
        content = BundleContent(scope, "full" if full else "incremental", seq, None if full else seq - 1, int(time.time()), tuple(upserts), tuple(removes), tuple(erases))
        self.seqs[scope] = max(last, seq)
        return build_bundle(content, self.key, {d: ident.sealing_key.public_key() for d, ident in devices.items()})


def new_device(root: Path, name: str = "door-1") -> tuple[Path, bytes, DeviceIdentity]:
    data_dir = root / name
    data_dir.mkdir(parents=True, mode=0o700)
    kek = generate_kek_file(data_dir / "kek.key")
    GalleryStore.open(data_dir, kek, create=True).close()
    return data_dir, kek, DeviceIdentity.open(data_dir)


def random_uid() -> str:
    return secrets.token_hex(16)
