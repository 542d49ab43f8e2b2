"""Bytes per device for a one-person erasure in a group of N devices; prints one JSON object.

    .venv/bin/python bench/erasure_bytes.py [--devices 1000] [--persons 500] [--dim 512]

A hub on SQLite (in a temporary directory) with `--persons` persons (one `--dim` template each)
in one group of `--devices` devices (real X25519 / Ed25519 key pairs); the full bundle is built and
every device's ack stored, then one person is erased and the next bundle built — what every device
of the group receives for that erasure (one message on the group topic), and, for comparison, the
bundle of a one-person add after it. One device opens both with its own key and the group keys it
kept (`sync.bundle.open_bundle`), so the figure is of a bundle the device can use. `wraps` counts
the per-device wrapped keys the bundle carries; `build_s` is the hub's time to build it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench.harness.sync_helpers import KeptKeys, person
from edge.config import HubConfig
from edge.identity import raw_public
from sync import protocol
from sync.bundle import open_bundle
from sync.hub.service import Hub


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--persons", type=int, default=500)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(HubConfig(data_dir=str(Path(tmp) / "hub")))
        hub.store.add_group("staff")
        keys = {f"door-{i:04d}": X25519PrivateKey.generate() for i in range(args.devices)}
        for name, key in keys.items():
            hub.store.add_device(name, raw_public(Ed25519PrivateKey.generate().public_key()).hex(), raw_public(key.public_key()).hex(), ("staff",))
        people = [person(i, n_templates=1, dim=args.dim) for i in range(args.persons)]
        for p in people:
            hub.store.add_person(p)
        topic, one, kept = protocol.group_gallery_topic("staff"), "door-0000", KeptKeys()
        verify = hub.identity.signing_key.public_key()

        def build() -> tuple[dict, float]:
            started = time.perf_counter()
            [out] = hub.bundles(group="staff")
            took = time.perf_counter() - started
            content = open_bundle(out.payload, topic, verify, one, keys[one], kept)
            for name in keys:
                hub.store.record_gallery_ack({"device": name, "scope": out.scope, "seq": out.seq, "ok": True, "gallery_version": 0, "error": ""})
            wraps = len(json.loads(out.payload)["recipients"])
            return {"kind": out.kind, "bytes": len(out.payload), "wraps": wraps, "persons": len(content.upserts), "erases": len(content.erases),
                    "build_s": round(took, 3)}, took

        full, _ = build()
        hub.store.erase_person(people[0].uid)
        erasure, _ = build()
        hub.store.add_person(person(args.persons + 1, n_templates=1, dim=args.dim))
        add, _ = build()
        hub.close()
    print(json.dumps({"devices": args.devices, "persons": args.persons, "dim": args.dim, "full": full, "erasure": erasure, "add_after": add,
                      "erasure_bytes_per_device": erasure["bytes"]}))


if __name__ == "__main__":
    main()
