"""Broker access for the device agent and the hub: TLS, login, and the no-TLS-off-host rule.

`configure_client(client, section, where)` sets up a paho-mqtt 2 client from a `[sync]` or
`[hub]` table (`where` names it in errors):
- TLS with the CA in `tls_ca_file` and, when given, a client certificate + key;
- `username` with the password read once, here, from `password_file`: a bare file name is taken
  from `$CREDENTIALS_DIRECTORY` when systemd set it (`LoadCredential=facegate-mqtt:/etc/...`),
  and a file that group or others can read is refused (the password is as good as published);
- a broker off this host without TLS would carry the login, the audit trail and the bundles in
  clear, so it is refused unless `allow_insecure_broker = true`, and then logged as a warning.
Every problem is a ConfigError naming the key, raised before anything connects.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import stat
from pathlib import Path
from typing import Protocol

import paho.mqtt.client as mqtt

from edge.errors import ConfigError

_LOG = logging.getLogger(__name__)
_MAX_PASSWORD = 4096  # longer is not a password file (a key, a wrong path); read no more


class BrokerSection(Protocol):
    """The keys `[sync]` and `[hub]` share (edge/config/tables.py)."""

    @property
    def broker_host(self) -> str: ...
    @property
    def tls_ca_file(self) -> str: ...
    @property
    def tls_cert_file(self) -> str: ...
    @property
    def tls_key_file(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password_file(self) -> str: ...
    @property
    def allow_insecure_broker(self) -> bool: ...


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost; any other name may resolve anywhere."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configure_client(client: mqtt.Client, section: BrokerSection, where: str) -> None:
    """TLS and login on `client` from `section`; ConfigError (naming `<where>.<key>`) when the
    files are wrong or the broker would be reached in clear off this host."""
    _check_transport(section, where)
    if section.tls_ca_file:
        try:
            client.tls_set(ca_certs=section.tls_ca_file, certfile=section.tls_cert_file or None, keyfile=section.tls_key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{where}.tls_ca_file / tls_cert_file / tls_key_file: cannot load the TLS files ({exc}); "
                "check the paths and that the key matches the certificate"
            ) from exc
    if section.username:
        password = read_password(section.password_file, where) if section.password_file else None
        client.username_pw_set(section.username, password)


def _check_transport(section: BrokerSection, where: str) -> None:
    if section.tls_ca_file or is_loopback(section.broker_host):
        return
    if not section.allow_insecure_broker:
        raise ConfigError(
            f"{where}.broker_host: {section.broker_host!r} is not on this host and {where}.tls_ca_file is empty, "
            "so the login, audit trail and bundles would cross the network in clear; "
            f"set {where}.tls_ca_file (and a client certificate), or {where}.allow_insecure_broker = true to accept that"
        )
    _LOG.warning(
        "%s: broker %s is reached WITHOUT TLS (allow_insecure_broker = true): credentials and messages cross the network in clear",
        where, section.broker_host,
    )


def password_path(name: str) -> tuple[Path, bool]:
    """(the file to read, whether it is a systemd credential) for a `password_file` value."""
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and os.sep not in name:
        return Path(credentials) / name, True
    return Path(name), False


def read_password(name: str, where: str) -> str:
    """The password in `name` (one line; a trailing newline is dropped), refusing a file that
    group or others can read. Credentials skip that check: systemd writes them mode 0400 owned
    by root, with an ACL for the unit's user that shows in the group bits, in a directory only
    that unit can enter."""
    path, credential = password_path(name)
    key = f"{where}.password_file"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot open {path} ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)  # the descriptor's file: a file swapped after the check is not read
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{key}: {path} is not a regular file")
        if not credential and st.st_mode & 0o044:
            raise ConfigError(
                f"{key}: {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run `chmod 600 {path}` and change the broker password if others could read it"
            )
        raw = os.read(fd, _MAX_PASSWORD + 1)
    finally:
        os.close(fd)
    try:
        password = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from exc
    if not password or len(raw) > _MAX_PASSWORD or "\n" in password:
        raise ConfigError(f"{key}: {path} must hold the password alone on one line (got {len(raw)} bytes)")
    return password
