"""Who may see and do what: the `page(role)` wrapper every console route goes through, and sign-in.

`page(role, action)` finds the session from its cookie (none: to /login), checks the user's
role (below it: 403), and on a POST reads the body within `[hub] web_max_upload_bytes` and
refuses it unless its `csrf` field is the session's token; then it records the view or the
action in `hub_audit` and calls the handler. Sign-in is limited per user name and per address
(`ratelimit.py`), has its own CSRF check (a random cookie the form must echo), and a wrong
name or password get the same answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sync.hub.console.context import Console
from sync.hub.console.sessions import COOKIE, Session, check_csrf
from sync.hub.console.users import User, UserError

LOGIN_COOKIE = "fg_login"
HEADERS = {
    # No script but the console's own file, no framing, no referrer beyond the console, no caching
    # of pages that hold names.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


class TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Ctx:
    request: Request
    console: Console
    user: User
    session: Session
    form: FormData | None

    @property
    def names(self) -> bool:
        """Whether this user may see persons' names and uids (viewers see neither)."""
        return self.user.can("operator")

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return render(self.console, template, status, user=self.user, csrf=self.session.csrf, names=self.names, **values)


def render(console: Console, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    values.setdefault("user", None)
    values.setdefault("csrf", "")
    values.setdefault("names", False)
    return HTMLResponse(console.env.get_template(template).render(**values), status, headers=HEADERS)


def address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def bounded_form(request: Request, limit: int) -> FormData:
    """The POST body, refused above `limit` bytes whether or not it declared a length."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    request._body = bytes(body)  # Starlette's form parser reads the cached body
    return await request.form(max_files=32, max_fields=64)


Handler = Callable[[Ctx], Awaitable[Response]]


def page(role: str, action: str | None = None) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            console: Console = request.app.state.console
            session = console.sessions.find(request.cookies.get(COOKIE))
            user = _user(console, session)
            if session is None or user is None:
                if request.method == "GET":
                    return RedirectResponse("/login", 303, headers=HEADERS)
                return render(console, "message.html", 401, title="Signed out", text="Your session has ended: sign in again.")
            what = {"path": request.url.path, "method": request.method, "address": address(request)}
            if not user.can(role):
                console.audit("console.denied", user, {**what, "needs": role})
                return render(console, "message.html", 403, user=user, title="Not allowed", text=f"This needs the {role} role; you are {user.role}.")
            form = None
            if request.method == "POST":
                try:
                    form = await bounded_form(request, console.cfg.hub.web_max_upload_bytes)
                except TooLarge:
                    console.audit("console.refused", user, {**what, "why": "too large"})
                    return render(console, "message.html", 413, user=user, title="Too large", text=f"At most {console.cfg.hub.web_max_upload_bytes} bytes per form.")
                if not check_csrf(session.csrf, form.get("csrf")):
                    console.audit("console.refused", user, {**what, "why": "csrf"})
                    return render(console, "message.html", 403, user=user, title="Refused", text="The form's security token is missing or wrong: reload the page and try again.")
            console.audit(f"console.{action or 'view'}", user, {**what, **({"query": str(request.query_params)[:300]} if request.query_params else {})})
            return await handler(Ctx(request, console, user, session, form))

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _user(console: Console, session: Session | None) -> User | None:
    if session is None:
        return None
    try:
        return console.users.get(session.user)
    except UserError:  # removed meanwhile
        return None


async def login_form(request: Request) -> Response:
    console: Console = request.app.state.console
    token = secrets.token_urlsafe(24)
    response = render(console, "login.html", login_csrf=token, error="")
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=console.secure_cookies, path="/login")
    return response


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    try:
        form = await bounded_form(request, 16_384)
    except TooLarge:
        return render(console, "message.html", 413, title="Too large", text="")
    name, password, where = str(form.get("user", ""))[:64], str(form.get("password", "")), address(request)
    if not check_csrf(request.cookies.get(LOGIN_COOKIE, ""), form.get("csrf")):
        if console.limiter.record_refusal("csrf", name, where):
            console.audit("console.login_refused", name or "-", {"address": where, "why": "csrf"})
        return render(console, "message.html", 403, title="Refused", text="The sign-in form's security token is missing or wrong: reload the page.")
    if not console.limiter.allowed(name, where):
        if console.limiter.record_refusal("rate", name, where):
            console.audit("console.login_refused", name or "-", {"address": where, "why": "rate limited"})
        return _login_again(console, request, 429, "Too many failed sign-ins: wait a few minutes.")
    user = console.users.verify(name, password)
    if user is None:
        console.limiter.failed(name, where)
        console.audit("console.login_failed", name or "-", {"address": where})
        return _login_again(console, request, 401, "Wrong user name or password.")
    console.limiter.succeeded(name)
    console.sessions.purge()  # expired sessions of everyone go at each sign-in
    console.audit("console.login", user, {"address": where})
    response = RedirectResponse("/", 303, headers=HEADERS)
    response.set_cookie(COOKIE, console.sessions.start(user.name, where), httponly=True, samesite="strict", secure=console.secure_cookies, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _login_again(console: Console, request: Request, status: int, error: str) -> Response:
    return render(console, "login.html", status, login_csrf=request.cookies.get(LOGIN_COOKIE, ""), error=error)


@page("viewer", "logout")
async def logout(ctx: Ctx) -> Response:
    ctx.console.sessions.end(ctx.session)
    response = RedirectResponse("/login", 303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response
