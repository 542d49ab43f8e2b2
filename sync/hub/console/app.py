"""The console's Starlette application: sign-in, then persons, review, reports, devices, audit, live view.

Starlette (with Jinja2 templates, served by uvicorn) because it is a small, maintained ASGI
toolkit: plain server-rendered pages, multipart uploads, streaming responses for the live view
(server-sent events) and TLS through uvicorn, without a JavaScript build or an ORM; the hub's
store stays the one SQL layer (`sync.hub.db`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from sync.hub.console import audit, fleet, live, persons, reports, review
from sync.hub.console.auth import HEADERS, Ctx, login, login_form, logout, page, render
from sync.hub.console.context import TEMPLATES, Console


@page("viewer")
async def home(ctx: Ctx) -> Response:
    return RedirectResponse("/devices", 303, headers=HEADERS)


async def not_found(request: Request, _exc: Exception) -> Response:
    return render(request.app.state.console, "message.html", 404, title="Not found", text="No such page.")


def create_app(console: Console) -> Starlette:
    routes = [
        Route("/", home), Route("/login", login_form), Route("/login", login, methods=["POST"]), Route("/logout", logout, methods=["POST"]),
        *persons.ROUTES, *review.ROUTES, *reports.ROUTES, *fleet.ROUTES, *audit.ROUTES, *live.ROUTES,
        Mount("/static", StaticFiles(directory=TEMPLATES.parent / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found})
    app.state.console = console
    return app
