"""Console users (admin, operator, viewer) in the hub database, passwords hashed with scrypt.

A stolen `hub.db` must not hand out the console's passwords: each is stored as a salted scrypt
hash (`cryptography`'s, N=2^15, r=8: ~50 ms and 32 MiB per guess). `verify` spends the same
work on an unknown user name as on a known one, so the response time does not tell which
names exist. Users are managed from the shell only (`facegate admin user ...`): an account
that can create accounts would be one more thing a stolen session could do.
"""

from __future__ import annotations

import base64
import hmac
import os
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from edge.errors import FacegateError
from sync.hub.console import sessions
from sync.hub.db import HubDb

ROLES = ("viewer", "operator", "admin")  # each can do what the ones before it can
MIN_PASSWORD = 12
_N_LOG2, _R, _P = 15, 8, 1

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hub_users (name TEXT PRIMARY KEY, role TEXT NOT NULL, pw_hash TEXT NOT NULL, created BIGINT NOT NULL, changed BIGINT NOT NULL)",
)


class UserError(FacegateError):
    """A console user request names an unknown user or role, or a password that is too weak."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created: int
    changed: int

    def can(self, role: str) -> bool:
        """True when this user's role is `role` or above it."""
        return ROLES.index(self.role) >= ROLES.index(role)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str, n_log2: int = _N_LOG2) -> str:
    salt = os.urandom(16)
    digest = Scrypt(salt=salt, length=32, n=2**n_log2, r=_R, p=_P).derive(password.encode())
    return f"scrypt${n_log2}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n_log2, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = Scrypt(salt=base64.b64decode(salt), length=32, n=2 ** int(n_log2), r=int(r), p=int(p)).derive(password.encode())
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def check_user_name(name: str) -> str:
    if not (1 <= len(name) <= 64) or not all(c.isalnum() or c in "._-@" for c in name):
        raise UserError(f"user name {name!r}: 1-64 letters, digits and . _ - @")
    return name


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise UserError("password: at most 1024 characters")
    return password


class UserStore:
    def __init__(self, db: HubDb) -> None:
        self.db = db
        with db.transaction():
            for statement in (*SCHEMA, *sessions.SCHEMA):  # passwd and remove end the user's sessions
                db.execute(statement)
        self._dummy = hash_password("not a password of anyone")

    def add(self, name: str, role: str, password: str) -> User:
        if role not in ROLES:
            raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
        check_user_name(name)
        digest = hash_password(check_new_password(password))
        now = int(time.time())
        with self.db.transaction():
            if self.db.execute("SELECT 1 FROM hub_users WHERE name=?", (name,)):
                raise UserError(f"user {name!r} exists (admin user passwd, or remove it first)")
            self.db.execute("INSERT INTO hub_users VALUES (?, ?, ?, ?, ?)", (name, role, digest, now, now))
        return self.get(name)

    def get(self, name: str) -> User:
        rows = self.db.execute("SELECT name, role, created, changed FROM hub_users WHERE name=?", (name,))
        if not rows:
            raise UserError(f"no console user {name!r} (admin user list)")
        return User(*rows[0])

    def passwd(self, name: str, password: str, role: str | None = None) -> User:
        self.get(name)
        if role is not None and role not in ROLES:
            raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
        digest = hash_password(check_new_password(password))
        with self.db.transaction():
            self.db.execute("UPDATE hub_users SET pw_hash=?, changed=?" + (", role=?" if role else "") + " WHERE name=?",
                            (digest, int(time.time()), *((role,) if role else ()), name))
            self.db.execute("DELETE FROM hub_sessions WHERE user_name=?", (name,))  # a new password ends every session
        return self.get(name)

    def remove(self, name: str) -> None:
        self.get(name)
        with self.db.transaction():
            self.db.execute("DELETE FROM hub_users WHERE name=?", (name,))
            self.db.execute("DELETE FROM hub_sessions WHERE user_name=?", (name,))

    def list(self) -> list[User]:
        return [User(*r) for r in self.db.execute("SELECT name, role, created, changed FROM hub_users ORDER BY name")]

    def verify(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs; None otherwise (same work either way)."""
        rows = self.db.execute("SELECT name, role, created, changed, pw_hash FROM hub_users WHERE name=?", (name,)) if len(name) <= 64 else []
        ok = check_password(password[:1024], rows[0][4] if rows else self._dummy)
        return User(*rows[0][:4]) if rows and ok else None
