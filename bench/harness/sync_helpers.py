"""Shared by the sync tests and bench/sync.py: a hub key pair, synthetic persons, a bundle maker,
and a sync device (gallery, identity, hub keys and `[sync]` config) whose agent runs in-process."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.audit.journal import AuditLog
from edge.config import Config, config_from_dict
from edge.gallery.changes import SyncPerson
from edge.gallery.crypto import generate_kek_file
from edge.gallery.records import PersonProfile
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity, raw_public
from sync.agent import SyncAgent
from sync.bundle import BundleContent, build_bundle

MODEL = "sync_test"
DIM = 64
DEVICE = "door-1"


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


@dataclass
class Device:
    data_dir: Path
    kek: bytes
    identity: DeviceIdentity
    hub: Hub
    hub_seal: X25519PrivateKey
    cfg: Config
    config_file: Path

    def agent(self, **kwargs: object) -> tuple[SyncAgent, AuditLog]:
        log = AuditLog.open(self.data_dir)
        return SyncAgent(self.cfg, lambda: GalleryStore.open(self.data_dir, self.kek), log, **kwargs).start(), log  # type: ignore[arg-type]


def make_device(root: Path, port: int, device_id: str = DEVICE, **sync: object) -> Device:
    data_dir, kek, identity = new_device(root, device_id)
    hub, hub_seal = Hub(), X25519PrivateKey.generate()
    (root / "hub_sign.pub").write_text(raw_public(hub.key.public_key()).hex())
    (root / "hub_seal.pub").write_text(raw_public(hub_seal.public_key()).hex())
    table = {
        "broker_host": "127.0.0.1", "broker_port": port, "device_id": device_id, "groups": ["staff"],
        "hub_sign_key_file": str(root / "hub_sign.pub"), "hub_seal_key_file": str(root / "hub_seal.pub"),
        "ack_timeout_s": 1.0, "reconnect_min_s": 1, "reconnect_max_s": 2, "batch": 50, "window": 8, **sync,
    }
    config_file = root / "config.toml"
    config_file.write_text(
        f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[sync]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    )
    return Device(data_dir, kek, identity, hub, hub_seal, config_from_dict({"sync": table}), config_file)


class KeptKeys:
    """A simulated device's kept group keys in memory (the interface of `sync.groupkeys.GroupKeyFile`)."""

    def __init__(self) -> None:
        self.keys: dict[tuple[str, int], tuple[str, str]] = {}

    def get(self, scope: str, epoch: int) -> tuple[str, str] | None:
        return self.keys.get((scope, epoch))

    def newest(self, scope: str) -> tuple[int, str, str] | None:
        epochs = [e for s, e in self.keys if s == scope]
        return (max(epochs), *self.keys[(scope, max(epochs))]) if epochs else None

    def put(self, scope: str, epoch: int, eph: str, wrapped: str) -> None:  # only the newest, as sync.groupkeys
        self.keys = {k: v for k, v in self.keys.items() if k[0] != scope or k[1] > epoch}
        if not any(k[0] == scope for k in self.keys):
            self.keys[(scope, epoch)] = (eph, wrapped)
