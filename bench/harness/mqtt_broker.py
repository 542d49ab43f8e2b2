"""A real mosquitto for the sync tests and bench/sync.py: loopback, free port, killable, restartable.

`Broker(tmp_dir).start()` writes a config and runs `/usr/sbin/mosquitto -c <conf>`; `kill()` is a
SIGKILL (an outage, not a clean shutdown) and `start()` again brings it back on the same port.
`tls_material()` makes a CA, a server certificate and one client certificate per name with
`cryptography`; with it the broker requires client certificates and takes the certificate's CN as
the user name, or, given `passwords`, requires both a certificate and a user's password (a
mosquitto 2 `$7$` PBKDF2-SHA512 password file, written by `password_line`). With `acl`, the
broker runs the ACL shipped in packaging/mosquitto/facegate.acl: its `pattern` lines (each device
on its own topics) and its hub rules, plus each user's lines from `acl` (a device's groups).
`secure_fleet()` starts one with everything on — TLS, passwords, ACL — and hands back what the
clients need (`SecureBroker`: port, CA, and per user its certificate, key and password file).
"""

from __future__ import annotations

import base64
import datetime
import getpass
import hashlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sync import protocol

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
SHIPPED_ACL = Path(__file__).resolve().parents[2] / "packaging" / "mosquitto" / "facegate.acl"
HUB_USER = "hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[Path, Path]]  # name → (cert, key)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, issuer_key: ec.EllipticCurvePrivateKey, ca: bool, server: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2)).add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def tls_material(directory: Path, clients: list[str]) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("facegate test CA", ca_key, None, ca_key, ca=True, server=False)
    files: dict[str, tuple[Path, Path]] = {}

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        return cert_path, key_path

    ca_path, _ = write("ca", ca_cert, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = write("server", _cert("localhost", server_key, ca_cert.subject, ca_key, ca=False, server=True), server_key)
    for name in clients:
        key = ec.generate_private_key(ec.SECP256R1())
        files[name] = write(f"client-{name}", _cert(name, key, ca_cert.subject, ca_key, ca=False, server=False), key)
    return TlsFiles(ca_path, server_cert, server_key_path, files)


def password_line(user: str, password: str, iterations: int = 101) -> str:
    """One line of a mosquitto 2 password file, as `mosquitto_passwd` writes it:
    `user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt)>`."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def shipped_acl() -> tuple[list[str], list[str]]:
    """The shipped ACL's `pattern` lines and its hub user's `topic` lines."""
    patterns, hub, user = [], [], None
    for raw in SHIPPED_ACL.read_text().splitlines():
        line = raw.strip()
        if line.startswith("pattern "):
            patterns.append(line)
        elif line.startswith("user "):
            user = line.split(None, 1)[1]
        elif line.startswith("topic ") and user == HUB_USER:
            hub.append(line)
    return patterns, hub


def acl_text(acl: dict[str, list[str]]) -> str:
    """The broker's ACL file: the shipped patterns and hub rules, then each user's own lines."""
    patterns, hub = shipped_acl()
    users = {HUB_USER: hub, **{u: [] for u in acl}}
    for user, topics in acl.items():
        users[user] = users[user] + [f"topic {t}" for t in topics]
    return "\n".join(patterns + [""] + [line for user, rules in users.items() for line in (f"user {user}", *rules, "")])


class Broker:
    def __init__(self, directory: Path, tls: TlsFiles | None = None, acl: dict[str, list[str]] | None = None,
                 passwords: dict[str, str] | None = None) -> None:
        """`acl`: user → topic rules (`read facegate/v1/groups/staff/gallery`) added to the shipped
        ACL; `passwords`: user → password, required from every client (with `tls`, on top of a
        client certificate)."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.conf = self.dir / "mosquitto.conf"
        self.log: Path | None = None
        # `user`: mosquitto started as root drops to user "mosquitto", which cannot read the
        # 0600 keys and 0700 temp dirs the tests create; stay the user running the tests.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence false", "log_dest none", "max_queued_messages 100000", "max_inflight_messages 100"]
        if tls is None and passwords is None:
            lines.append("allow_anonymous true")
        else:
            lines.append("allow_anonymous false")
        if tls is not None:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}", "require_certificate true"]
            # With passwords the user is the one that logged in; without, the certificate's CN.
            lines.append(f"use_identity_as_username {'false' if passwords is not None else 'true'}")
        if passwords is not None:
            # The broker's log is its record of refused logins and ACL denials ("Denied PUBLISH",
            # a debug line in mosquitto 2), which the attack tests read.
            self.log = self.dir / "mosquitto.log"
            lines[lines.index("log_dest none")] = f"log_dest file {self.log}"
            lines += ["log_type error", "log_type warning", "log_type notice", "log_type information", "log_type debug"]
            passwd = self.dir / "passwd"
            passwd.write_text("".join(password_line(u, p) + "\n" for u, p in passwords.items()))
            passwd.chmod(0o600)
            lines.append(f"password_file {passwd}")
        if acl is not None:
            acl_file = self.dir / "acl"
            acl_file.write_text(acl_text(acl))
            lines.append(f"acl_file {acl_file}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.kill()


@dataclass(frozen=True)
class Login:
    """What one broker user's client needs: its certificate and key, its password and a 0600
    file holding it (for `password_file`)."""

    user: str
    cert: Path
    key: Path
    password: str
    password_file: Path


@dataclass(frozen=True)
class SecureBroker:
    broker: Broker
    port: int
    ca: Path
    logins: dict[str, Login]  # user → login; the hub's user is HUB_USER

    def config(self, user: str) -> dict[str, object]:
        """The `[sync]` / `[hub]` keys that make `user` a client of this broker."""
        login = self.logins[user]
        return {"broker_host": "127.0.0.1", "broker_port": self.port, "tls_ca_file": str(self.ca), "tls_cert_file": str(login.cert),
                "tls_key_file": str(login.key), "username": user, "password_file": str(login.password_file)}


def secure_fleet(directory: Path, devices: dict[str, tuple[str, ...]]) -> SecureBroker:
    """A started broker with TLS (client certificates required), a password per user and the
    shipped ACL, for the hub and `devices` (device id → its groups). `kill()` its broker after."""
    users = [HUB_USER, *devices]
    tls = tls_material(directory / "pki", users)
    passwords = {u: secrets.token_urlsafe(18) for u in users}
    secrets_dir = directory / "passwords"
    secrets_dir.mkdir(parents=True, mode=0o700)
    logins = {}
    for user in users:
        path = secrets_dir / user
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(passwords[user] + "\n")
        logins[user] = Login(user, *tls.clients[user], passwords[user], path)
    acl = {d: [f"read {protocol.group_gallery_topic(g)}" for g in groups] for d, groups in devices.items()}
    broker = Broker(directory / "broker", tls=tls, acl=acl, passwords=passwords).start()
    return SecureBroker(broker, broker.port, tls.ca, logins)
