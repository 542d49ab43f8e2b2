"""Keeping the probes of named decisions for `gallery reject-match`, off the inference thread.

`ProbeKeeper.keep(...)` is called from the inference thread once per grant or deny: it only
puts the embedding on a bounded queue (full: the probe is dropped and counted, a decision is
never delayed by it). The keeper's own thread owns its own store connection and writes each
probe sealed under the person's key (`edge.gallery.negatives.keep_probe`: one INSERT and the
pruning, in one transaction). A gallery write lock held by another process (a bulk `gallery
enroll`) therefore blocks this thread, never the frame loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edge.errors import FacegateError
from edge.gallery import negatives

if TYPE_CHECKING:
    from edge.gallery.store import GalleryStore

_LOG = logging.getLogger(__name__)
QUEUE_SIZE = 256
_STOP = None


class ProbeKeeper:
    """`ProbeKeeper(open_store, keep_h, max_rows).start()`; `keep(...)` per named decision; `close()`."""

    def __init__(self, open_store: Callable[[], GalleryStore], keep_h: float, max_rows: int) -> None:
        self._open_store = open_store  # called on the keeper's thread: one store per thread
        self.keep_s = keep_h * 3600.0
        self.max_rows = max_rows
        self._queue: queue.Queue[tuple[str, int, np.ndarray, str] | None] = queue.Queue(QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="facegate-probes", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.kept = 0
        self.dropped = 0  # the queue was full
        self.failed = 0  # the write failed (logged)

    def start(self) -> ProbeKeeper:
        """Starts the thread, which opens its store and prunes what expired while the daemon was
        down; the error of that open, if any, is raised here."""
        self._thread.start()
        self._ready.wait(30.0)
        if self._error is not None:
            raise self._error
        return self

    def keep(self, event_id: str, person_id: int, embedding: np.ndarray, model: str) -> bool:
        """Queues the probe (inference thread); False when the queue is full (dropped)."""
        try:
            self._queue.put_nowait((event_id, person_id, embedding, model))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout_s: float = 10.0) -> None:
        """Writes what is queued, then stops; gives up after `timeout_s` (a gallery locked
        elsewhere): the probes still queued are lost, which costs only the chance to reject them."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            _LOG.warning("probe keeper still busy after %.0f s; %d probe(s) not kept", timeout_s, self._queue.qsize())
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            store = self._open_store()
            negatives.prune_probes(store, self.keep_s, self.max_rows)
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while (item := self._queue.get()) is not _STOP:
                self._write(store, *item)
        finally:
            store.close()

    def _write(self, store: GalleryStore, event_id: str, person_id: int, embedding: np.ndarray, model: str) -> None:
        try:
            if negatives.keep_probe(store, event_id, person_id, embedding, model, self.keep_s, self.max_rows):
                self.kept += 1
        except FacegateError as exc:  # a full disk or a locked gallery costs a probe, not the daemon
            self.failed += 1
            if self.failed == 1 or self.failed % 100 == 0:
                _LOG.warning("probe of decision %s not kept (%s); %d not kept so far", event_id, exc, self.failed)
