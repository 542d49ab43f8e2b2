"""The group keys a device was given, kept across restarts: `<data_dir>/group_keys.json`.

A bundle sealed under a scope's group key (`sync.bundle.GroupKey`) either carries the key
wrapped to this device (full bundles, the first delta of a fresh epoch) or names only its epoch
(every other delta, and the deltas of an epoch the hub ratcheted forward after an erasure:
`sync.ratchet`). `sync.bundle.open_bundle` keeps each wrap it opened a signed bundle with, here,
looks the epoch up for a delta, and keeps a key it derived by the ratchet wrapped to this
device's own X25519 key. Only wrapped forms are stored — readable with this device's X25519
private key alone, which lives next to it — so the file adds no secret at rest. Only the newest
epoch per scope is kept (`KEEP`): an older key would open captured bundles that carried a person
erased since, and every later epoch of its chain can be derived from the newest. A delta of an
older or unknown epoch asks for a resync. Written atomically, mode 0600. An unreadable file
counts as empty (the next full bundle brings the key back): it can cost a resync, never a wrong
key, since every wrap is bound to its scope, epoch and device and checked by AES-GCM.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from edge.atomic_file import write_atomic

FILE = "group_keys.json"
KEEP = 1
_HEX = re.compile(r"^[0-9a-f]{1,256}$")
_LOG = logging.getLogger(__name__)


class GroupKeyFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, dict[str, list[str]]] = self._read()

    @classmethod
    def open(cls, data_dir: Path) -> GroupKeyFile:
        return cls(Path(data_dir) / FILE)

    def _read(self) -> dict[str, dict[str, list[str]]]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            _LOG.warning("%s unreadable (%s): group keys come again with the next full bundles", self.path, exc)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {s: {e: w for e, w in v.items() if _ok(e, w)} for s, v in doc.items() if isinstance(s, str) and isinstance(v, dict)}

    def get(self, scope: str, epoch: int) -> tuple[str, str] | None:
        kept = self._keys.get(scope, {}).get(str(epoch))
        return (kept[0], kept[1]) if kept else None

    def newest(self, scope: str) -> tuple[int, str, str] | None:
        """(epoch, eph, wrapped) of the newest epoch kept for `scope`."""
        epochs = self._keys.get(scope, {})
        if not epochs:
            return None
        epoch = max(epochs, key=int)
        return int(epoch), epochs[epoch][0], epochs[epoch][1]

    def put(self, scope: str, epoch: int, eph: str, wrapped: str) -> None:
        epochs = self._keys.setdefault(scope, {})
        if epochs.get(str(epoch)) == [eph, wrapped]:
            return
        epochs[str(epoch)] = [eph, wrapped]
        for old in sorted(epochs, key=int)[:-KEEP]:
            del epochs[old]
        try:
            write_atomic(self.path, json.dumps(self._keys, sort_keys=True).encode())
        except OSError as exc:  # kept in memory: a restart before the next full bundle costs a resync
            _LOG.warning("%s: cannot write (%s); the group key is kept until the agent stops", self.path, exc)


def _ok(epoch: object, wrap: object) -> bool:
    return (isinstance(epoch, str) and epoch.isdigit() and isinstance(wrap, list) and len(wrap) == 2
            and all(isinstance(w, str) and _HEX.match(w) for w in wrap))
