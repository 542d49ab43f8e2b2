"""`facegate admin user add|passwd|remove|list`: the console's users (roles admin, operator,
viewer) in the hub database. Passwords come from the terminal (asked twice) or, with
`--password-stdin`, from one line of standard input; they never appear in argv."""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import sys
from collections.abc import Callable

from edge.config import Config
from edge.errors import FacegateError

Handler = Callable[[argparse.Namespace, Config], int]
Wrap = Callable[[Handler], Callable[[argparse.Namespace], int]]


def _stores(cfg: Config):
    from sync.hub.console.users import UserStore
    from sync.hub.review import ReviewQueue
    from sync.hub.service import Hub

    store = Hub(cfg.hub).store
    return UserStore(store.db), ReviewQueue(store)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("new password: ")
    if getpass.getpass("again: ") != first:
        raise FacegateError("admin user: the two passwords differ")
    return first


def cmd_user_add(args: argparse.Namespace, cfg: Config) -> int:
    users, log = _stores(cfg)
    user = users.add(args.user, args.role, _password(args))
    log.record("user.add", user.name, {"role": user.role})
    print(f"console user {user.name} added ({user.role})")
    return 0


def cmd_user_passwd(args: argparse.Namespace, cfg: Config) -> int:
    users, log = _stores(cfg)
    user = users.passwd(args.user, _password(args), args.role)
    log.record("user.passwd", user.name, {"role": user.role})
    print(f"console user {user.name}: password changed ({user.role}); their sessions are ended")
    return 0


def cmd_user_remove(args: argparse.Namespace, cfg: Config) -> int:
    users, log = _stores(cfg)
    users.remove(args.user)
    log.record("user.remove", args.user, {})
    print(f"console user {args.user} removed; their sessions are ended")
    return 0


def cmd_user_list(args: argparse.Namespace, cfg: Config) -> int:
    users, _log = _stores(cfg)
    rows = [{"user": u.name, "role": u.role, "created": u.created, "changed": u.changed} for u in users.list()]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['user']:<32} {r['role']:<9} password set {datetime.datetime.fromtimestamp(r['changed']).isoformat(timespec='seconds')}")
    return 0


def add_user_commands(admin: argparse._SubParsersAction, run: Wrap) -> None:
    from sync.hub.console.users import ROLES

    user = admin.add_parser("user", help="hub console users: roles admin, operator, viewer").add_subparsers(dest="user_command", required=True)
    p = user.add_parser("add", help="a new console user")
    p.add_argument("user")
    p.add_argument("--role", choices=ROLES, required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from one line of standard input")
    p.set_defaults(func=run(cmd_user_add))
    p = user.add_parser("passwd", help="set a user's password (and role); ends their sessions")
    p.add_argument("user")
    p.add_argument("--role", choices=ROLES, default=None)
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=run(cmd_user_passwd))
    p = user.add_parser("remove", help="delete a console user; ends their sessions")
    p.add_argument("user")
    p.set_defaults(func=run(cmd_user_remove))
    p = user.add_parser("list", help="console users and roles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run(cmd_user_list))
