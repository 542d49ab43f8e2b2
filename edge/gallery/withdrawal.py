"""A person's own erasure at the kiosk (`withdraw`, edge/outputs/withdraw.py), on the inference thread.

The same crypto-erase as `gallery remove` (`Gallery.remove`: keys and sealed rows destroyed, WAL
checkpointed, the search index drops the templates at once, so the next track is not granted as
them), and a tombstone like the hub's erasures leave (`sync_erased`), so a bundle sent before the
hub heard of the withdrawal cannot bring the person back.
"""

from __future__ import annotations

import time

from edge.gallery.search import Gallery
from edge.gallery.sync_apply import TOMBSTONES


def erase_withdrawn(gallery: Gallery, person_id: int, uid: str) -> bool:
    """Erases gallery person `person_id` if it still is `uid`; False when it is gone already."""
    record = gallery.person(person_id)
    if record is None or record.uid != uid or not gallery.remove(record.profile.name):
        return False
    with gallery.store._transaction(write=True) as db:
        db.execute(TOMBSTONES)
        db.execute("INSERT OR IGNORE INTO sync_erased VALUES (?, ?)", (uid, int(time.time())))
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sync_members'").fetchone():  # made by the first bundle
            db.execute("DELETE FROM sync_members WHERE person_uid=?", (uid,))
    return True
