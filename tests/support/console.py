"""A plain HTTP client for the hub console (tests): a cookie jar, the CSRF token read from the
last page, form and multipart posts, and the status of every answer (errors included)."""

from __future__ import annotations

import http.cookiejar
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    url: str
    text: str
    cookies: tuple[str, ...] = ()  # the Set-Cookie headers, as sent


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003 - urllib's signature
        return None


class ConsoleClient:
    def __init__(self, base: str, follow: bool = True, context=None) -> None:
        self.base = base.rstrip("/") + "/"
        self.jar = http.cookiejar.CookieJar()
        handlers: list[urllib.request.BaseHandler] = [urllib.request.HTTPCookieProcessor(self.jar), urllib.request.HTTPSHandler(context=context)]
        if not follow:
            handlers.append(NoRedirect())
        self.opener = urllib.request.build_opener(*handlers)
        self.csrf = ""

    def _open(self, request: urllib.request.Request) -> Answer:
        try:
            with self.opener.open(request, timeout=120) as r:
                answer = Answer(r.status, r.url, r.read().decode(errors="replace"), tuple(r.headers.get_all("set-cookie") or ()))
        except urllib.error.HTTPError as exc:
            answer = Answer(exc.code, exc.url, exc.read().decode(errors="replace"), tuple(exc.headers.get_all("set-cookie") or ()))
        found = re.search(r'name="csrf" value="([^"]*)"', answer.text)
        if found:
            self.csrf = found.group(1)
        return answer

    def get(self, path: str) -> Answer:
        return self._open(urllib.request.Request(self.base + path.lstrip("/")))

    def post(self, path: str, fields: dict[str, str], csrf: bool = True, headers: dict[str, str] | None = None) -> Answer:
        data = dict(fields, **({"csrf": self.csrf} if csrf and "csrf" not in fields else {}))
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base + path.lstrip("/"), body, headers or {}, method="POST"))

    def post_files(self, path: str, fields: dict[str, str], files: list[tuple[str, str, bytes]], csrf: bool = True) -> Answer:
        """multipart/form-data: `files` as (field, file name, bytes)."""
        boundary = secrets.token_hex(16)
        parts = []
        for k, v in dict(fields, **({"csrf": self.csrf} if csrf else {})).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
        for field, name, data in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(self.base + path.lstrip("/"), body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, method="POST")
        return self._open(request)

    def login(self, user: str, password: str) -> Answer:
        self.get("login")
        return self.post("login", {"user": user, "password": password})

    def cookie(self, name: str) -> http.cookiejar.Cookie | None:
        return next((c for c in self.jar if c.name == name), None)
