"""The console's HTTP(S) server: uvicorn in a thread of `facegate hub serve`.

The console holds names, photos' templates and the power to erase, so it is not served in the
clear beyond this machine: with `web_tls_cert_file` and `web_tls_key_file` it speaks HTTPS (and
its cookies are `Secure`); without them only a loopback `web_address` is accepted, unless
`web_allow_insecure` says a TLS-terminating reverse proxy is in front (cookies `Secure` too,
as the browser talks HTTPS to the proxy).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time

import uvicorn

from edge.config import Config
from edge.errors import ConfigError, FacegateError
from sync.hub.console.app import create_app
from sync.hub.console.context import Console
from sync.hub.service import Hub

log = logging.getLogger("facegate.hub.console")


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_listen(address: str, cert: str, key: str, allow_insecure: bool) -> bool:
    """True when the console speaks TLS itself; ConfigError for a setting that would serve it in clear."""
    if bool(cert) != bool(key):
        raise ConfigError("hub.web_tls_cert_file and hub.web_tls_key_file: give both or neither")
    if not cert and not _loopback(address) and not allow_insecure:
        raise ConfigError(f"hub.web_address {address!r} is not loopback and the console has no TLS: set web_tls_cert_file and web_tls_key_file, "
                          "or web_allow_insecure = true behind a TLS reverse proxy")
    if not cert and not _loopback(address):
        log.warning("hub console on %s without TLS (web_allow_insecure): only behind a TLS reverse proxy", address)
    return bool(cert)


class ConsoleServer:
    def __init__(self, cfg: Config, hub: Hub, address: str | None = None, port: int | None = None) -> None:
        h = cfg.hub
        address = h.web_address if address is None else address
        tls = check_listen(address, h.web_tls_cert_file, h.web_tls_key_file, h.web_allow_insecure)
        self.console = Console(cfg, hub, secure_cookies=tls or h.web_allow_insecure)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((address, h.web_port if port is None else port))
        except OSError as exc:
            self._sock.close()
            raise FacegateError(f"hub console: cannot listen on {address}:{h.web_port} ({exc})") from exc
        self._sock.listen(128)
        bound = self._sock.getsockname()[1]
        host = f"[{address}]" if family == socket.AF_INET6 else address
        self.url = f"{'https' if tls else 'http'}://{host}:{bound}/"
        config = uvicorn.Config(create_app(self.console), log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3,
                                ssl_certfile=h.web_tls_cert_file or None, ssl_keyfile=h.web_tls_key_file or None, server_header=False,
                                # X-Forwarded-For only from the proxies named: anyone else could pick their own address.
                                proxy_headers=bool(h.web_trusted_proxies), forwarded_allow_ips=list(h.web_trusted_proxies) or None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, name="hub-console", daemon=True)

    def start(self, timeout: float = 30.0) -> ConsoleServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self._server.started:
            raise FacegateError("hub console: the web server did not start")
        return self

    def stop(self) -> None:
        self.console.stopping.set()
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()
