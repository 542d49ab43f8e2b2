""""Not this person" reports (sync.hub.reports) as a page: made from a grant in the audit view by an
operator or admin, signed and sent to the device that decided, listed with the device's answer
(sent, applied at, refused with why), filtered by state and device."""

from __future__ import annotations

from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.errors import FacegateError
from sync import protocol
from sync.hub.console.auth import HEADERS, Ctx, page
from sync.hub.reports import STATES, MatchReports
from sync.hub.service import publish_raw


def _reports(ctx: Ctx) -> MatchReports:
    return ctx.console.reports


@page("operator")
async def reports_page(ctx: Ctx) -> Response:
    params = ctx.request.query_params
    state, device = params.get("state", "")[:16], params.get("device", "")[:64]
    rows = _reports(ctx).list(state if state in STATES else None, device or None)
    names = ctx.console.names()
    return ctx.render("reports.html", rows=[(r, names.get(r.person_uid, "")) for r in rows], state=state, device=device, states=STATES,
                      devices=[d.id for d in ctx.console.store.devices()], made=params.get("made", "")[:32], error=params.get("error", "")[:300])


@page("operator", "report")
async def report(ctx: Ctx) -> Response:
    form = ctx.form
    assert form is not None
    device, event_id, uid, reason = (str(form.get(k, ""))[:600] for k in ("device", "event_id", "person_uid", "reason"))
    hub = ctx.console.hub

    def make_and_send() -> str:
        made, message = _reports(ctx).create(device, event_id, uid, reason, ctx.user.name, hub.identity.signing_key)
        publish_raw(hub.cfg, [(protocol.device_topic(device, protocol.REPORT), message)], name="console")
        return made.id

    try:
        report_id = await run_in_threadpool(make_and_send)
    except FacegateError as exc:
        return RedirectResponse(f"/reports?error={quote(str(exc)[:200])}", 303, headers=HEADERS)
    ctx.console.audit("console.reported", ctx.user, {"report": report_id, "device": device, "event_id": event_id, "person_uid": uid})
    return RedirectResponse(f"/reports?made={report_id}", 303, headers=HEADERS)


ROUTES = [Route("/reports", reports_page), Route("/reports", report, methods=["POST"])]
