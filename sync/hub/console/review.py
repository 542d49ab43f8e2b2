"""The kiosk enrollment review queue as a page (`sync.hub.review`): each held upload, why it was
held, and approve --merge / --as-new / reject, recorded in `hub_audit` with the user's name."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.errors import FacegateError
from sync.hub.console.auth import HEADERS, Ctx, page


def reason_text(r: dict) -> str:
    if r.get("why") == "same_name":
        return f"same name as {r.get('uid')}"
    if r.get("why") == "close_face":
        return f"face close to {r.get('uid')} (score {r.get('score')} ≥ {r.get('threshold')})"
    return f"face not compared: model {r.get('model')} has no calibration"


@page("operator")
async def queue(ctx: Ctx) -> Response:
    show_all = bool(ctx.request.query_params.get("all"))
    items = [(e, p, [reason_text(r) for r in e.reasons]) for e, p in ctx.console.review.items(show_all)]
    return ctx.render("review.html", items=items, show_all=show_all, error=ctx.request.query_params.get("error", ""))


@page("operator", "review")
async def decide(ctx: Ctx) -> Response:
    from urllib.parse import quote

    form = ctx.form
    assert form is not None
    item, action = int(ctx.request.path_params["item"]), str(form.get("action", ""))
    review = ctx.console.review
    try:
        if action == "merge":
            uid = review.approve_merge(item, str(form.get("target", "")).strip(), by=ctx.user.name)
        elif action == "new":
            uid = review.approve_new(item, str(form.get("name", "")).strip() or None, by=ctx.user.name)
        elif action == "reject":
            review.reject(item, by=ctx.user.name)
            uid = None
        else:
            raise FacegateError(f"unknown review action {action[:20]!r}")
    except FacegateError as exc:
        return RedirectResponse(f"/review?error={quote(str(exc)[:200])}", 303, headers=HEADERS)
    ctx.console.audit("console.reviewed", ctx.user, {"item": item, "action": action, "uid": uid})
    return RedirectResponse("/review", 303, headers=HEADERS)


ROUTES = [Route("/review", queue), Route("/review/{item:int}", decide, methods=["POST"])]
