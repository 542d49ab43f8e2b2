"""What every console request works with: the hub, its users and sessions, the login limiter,
the templates, and the hub's own audit log (`hub_audit`, shared with the review queue)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from edge.config import Config
from sync.hub.console.ratelimit import LoginLimiter
from sync.hub.console.sessions import Sessions
from sync.hub.console.users import User, UserStore
from sync.hub.reports import MatchReports
from sync.hub.review import ReviewQueue
from sync.hub.service import Hub

TEMPLATES = Path(__file__).resolve().parent / "templates"


def environment() -> jinja2.Environment:
    # Autoescape everywhere: names, device ids and audit bodies come from people and devices.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["when"] = _when
    env.filters["day"] = _day
    return env


def _when(ts: float | None) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds") if ts else "-"


def _day(ts: float | None) -> str:
    import datetime

    return datetime.date.fromtimestamp(ts).isoformat() if ts else ""


@dataclass
class Console:
    cfg: Config
    hub: Hub
    secure_cookies: bool = False
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    env: jinja2.Environment = field(default_factory=environment)
    stopping: threading.Event = field(default_factory=threading.Event)  # set on shutdown: live streams end
    _perception: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.users = UserStore(self.hub.store.db)
        self.sessions = Sessions(self.hub.store.db, self.cfg.hub.web_session_idle_s)
        self.review = ReviewQueue(self.hub.store)
        self.reports = MatchReports(self.hub.store)

    @property
    def store(self):
        return self.hub.store

    def audit(self, action: str, user: User | str, detail: dict[str, Any]) -> None:
        """One `hub_audit` entry: every page view and action of the console, by whom."""
        self.review.record(action, user.name if isinstance(user, User) else user, detail)

    def perception(self):
        """The face models, loaded on the first enrollment (the console itself needs none)."""
        with self._lock:
            if self._perception is None:
                from edge.perception.faces import Perception

                self._perception = Perception(self.cfg)
            return self._perception

    def names(self) -> dict[str, str]:
        """uid → name of every live person (for the roles that may see names)."""
        return {p.uid: p.name for p in self.store.person_entries() if p.erased is None}
