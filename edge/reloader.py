"""What `facegate run` does on SIGHUP, the kiosk's `reload` and an applied hub bundle.

A reload is built to the end before anything switches: the config file, the doors' cameras, the
models when a perception section changed, the gallery (its key, thresholds and index), the
doors' rules and the card map (`Pipeline.prepare_reload`). The pipeline then swaps assignments
only, so the run goes on with all of the old or all of the new.

Any exception refuses the new config, not only ours: a reload is an operator's edit, and a typo
in it must never stop the daemon that keeps the door. A refusal is logged, audited as
`config_reload_refused` and counted (`facegate_config_reload_failures_total`); the daemon keeps
the config it runs on. The gallery is still reopened under that config, because what changed on
disk is data, not configuration: a hub bundle revoking someone, or an enrollment, must apply
without waiting for the file to be fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge.audit.journal import AuditLog
from edge.config import Config, check_door_cameras
from edge.errors import ConfigError, FacegateError
from edge.gallery.loader import open_gallery
from edge.gallery.search import Gallery
from edge.perception.faces import Perception
from edge.video.pipeline import Pipeline, Reloaded, perception_changed

_LOG = logging.getLogger("facegate")


class Reloader:
    """`reloader()` → a `Reloaded` for the pipeline to swap in, or None (nothing to swap)."""

    def __init__(
        self,
        pipeline: Pipeline,
        journal: AuditLog,
        read_config: Callable[[], Config] | None,  # None: keep the config, reopen the gallery only
        data_dir: Path | None,
        applied: Callable[[Config], None],  # the daemon's own copy of the running config
        warn: Callable[[str], None] = _LOG.warning,
    ) -> None:
        self.pipeline, self.journal, self.read_config = pipeline, journal, read_config
        self.data_dir, self.applied, self.warn = data_dir, applied, warn

    def __call__(self) -> Reloaded | None:
        running = self.pipeline.cfg
        cfg: Config | None = None
        try:
            cfg = self.read_config() if self.read_config is not None else running
            reloaded = self._build(cfg, running)
        except Exception as exc:  # noqa: BLE001 - see the module's docstring
            self.pipeline.reload_failures += 1
            self._refused("reload refused, still running on the previous config", exc)
            if cfg == running:  # the gallery itself failed: under the same config it would again
                return None
        else:
            self.applied(cfg)
            _LOG.info("reloaded the config and the gallery (%d people)", len(reloaded.gallery))
            return reloaded
        try:
            reloaded = self._build(running, running, previous=True)
        except Exception as exc:  # noqa: BLE001 - the gallery that runs stays
            self._refused("the gallery was not reopened either, still running on the previous one", exc)
            return None
        _LOG.info("reopened the gallery (%d people) under the previous config", len(reloaded.gallery))
        return reloaded

    def _build(self, cfg: Config, running: Config, previous: bool = False) -> Reloaded:
        pipeline = self.pipeline
        problems = check_door_cameras(cfg.door, [c.name for c in pipeline.cameras])
        if problems:
            raise ConfigError.listing(problems)
        perception = Perception(cfg) if perception_changed(running, cfg) else None
        store = (perception or pipeline.perception).store
        opened: Gallery = open_gallery(self.data_dir, cfg, store, create=False, warn=self.warn)
        try:
            reloaded = pipeline.prepare_reload(cfg, opened, perception)
            self.journal.append("config_reload", {"persons": len(opened), **({"config": "previous"} if previous else {})})
        except BaseException:
            opened.close()
            raise
        return reloaded

    def _refused(self, what: str, exc: Exception) -> None:
        # Our own errors say what is wrong in one line; anything else gets its traceback.
        _LOG.error("%s: %s", what, exc, exc_info=not isinstance(exc, FacegateError))
        try:
            self.journal.append("config_reload_refused", {"error": type(exc).__name__, "reason": str(exc)[:500]})
        except Exception as audit_exc:  # noqa: BLE001 - a full disk must not turn a refused reload into a stop
            _LOG.error("the refused reload could not be audited: %s", audit_exc)
