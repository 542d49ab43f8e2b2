"""A real mosquitto for the sync tests and bench/sync.py: loopback, free port, killable, restartable.

`Broker(tmp_dir).start()` writes a config and runs `/usr/sbin/mosquitto -c <conf>`; `kill()` is a
SIGKILL (an outage, not a clean shutdown) and `start()` again brings it back on the same port.
`tls_material()` makes a CA, a server certificate and one client certificate per name with
`cryptography`; with it the broker requires client certificates, takes the certificate's CN as
the user name, and an ACL lets each device use only its own topics (and its groups' galleries).
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
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

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


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


class Broker:
    def __init__(self, directory: Path, tls: TlsFiles | None = None, acl: dict[str, list[str]] | None = None) -> None:
        """`acl`: user → topic rules (`readwrite facegate/v1/#`); devices get their own topics by pattern."""
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = tls
        self.conf = self.dir / "mosquitto.conf"
        # `user`: mosquitto started as root drops to user "mosquitto", which cannot read the
        # 0600 keys and 0700 temp dirs the tests create; stay the user running the tests.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence false", "log_dest none", "max_queued_messages 100000", "max_inflight_messages 100"]
        if tls is None:
            lines.append("allow_anonymous true")
        else:
            lines += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}", "require_certificate true",
                      "use_identity_as_username true", "allow_anonymous false"]
        if acl is not None:
            acl_file = self.dir / "acl"
            rules = []
            for user, topics in acl.items():
                rules += [f"user {user}", *(f"topic {t}" for t in topics), ""]
            rules += ["pattern readwrite facegate/v1/devices/%u/#", ""]
            acl_file.write_text("\n".join(rules))
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
