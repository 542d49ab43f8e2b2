"""Console sessions and their CSRF tokens, in the hub database (several hub instances share them).

The cookie holds a random 32-byte token; the database holds only its SHA-256, so a copy of the
database opens no session. Each session has its own CSRF token, put in every form and checked
on every POST (`check_csrf`). A session ends on sign-out, after `[hub] web_session_idle_s`
without a request, after MAX_AGE_S in any case, and when its user's password changes or the
user is removed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sync.hub.db import HubDb

MAX_AGE_S = 12 * 3600
COOKIE = "fg_session"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_sessions (token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, csrf TEXT NOT NULL,"
    " created BIGINT NOT NULL, seen BIGINT NOT NULL, address TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: str
    user: str
    csrf: str
    created: int


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_csrf(expected: str, given: object) -> bool:
    """A POST's token against its session's: constant time, and a missing one is a wrong one."""
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


class Sessions:
    def __init__(self, db: HubDb, idle_s: float) -> None:
        self.db = db
        self.idle_s = idle_s
        with db.transaction():
            for statement in SCHEMA:
                db.execute(statement)

    def start(self, user: str, address: str) -> str:
        """A new session for `user`: its cookie token (shown once, stored hashed)."""
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        self.db.execute("INSERT INTO hub_sessions VALUES (?, ?, ?, ?, ?, ?)", (_hash(token), user, secrets.token_urlsafe(32), now, now, address[:64]))
        return token

    def find(self, token: str | None) -> Session | None:
        if not token or len(token) > 100:
            return None
        now = int(time.time())
        rows = self.db.execute("SELECT token_hash, user_name, csrf, created, seen FROM hub_sessions WHERE token_hash=?", (_hash(token),))
        if not rows:
            return None
        token_hash, user, csrf, created, seen = rows[0]
        if now - seen > self.idle_s or now - created > MAX_AGE_S:
            self.db.execute("DELETE FROM hub_sessions WHERE token_hash=?", (token_hash,))
            return None
        if now != seen:
            self.db.execute("UPDATE hub_sessions SET seen=? WHERE token_hash=?", (now, token_hash))
        return Session(token_hash, user, csrf, created)

    def end(self, session: Session) -> None:
        self.db.execute("DELETE FROM hub_sessions WHERE token_hash=?", (session.token_hash,))

    def purge(self) -> None:
        now = int(time.time())
        self.db.execute("DELETE FROM hub_sessions WHERE seen < ? OR created < ?", (now - int(self.idle_s), now - MAX_AGE_S))
