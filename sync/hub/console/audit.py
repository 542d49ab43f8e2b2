"""Audit search (person, device, door, decision, time), CSV export, chain verification, and the
hub's own log. Viewers search without the person filter and see no uid or name."""

from __future__ import annotations

import csv
import datetime
import io
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route

from edge.errors import FacegateError
from sync.hub.console.auth import HEADERS, Ctx, page
from sync.hub.verify import verify_device_chain

SHOWN = 500
SCANNED = 20_000


@dataclass(frozen=True, slots=True)
class Row:
    at: float
    device: str
    seq: int
    kind: str
    door: str
    camera: str
    decision: str
    score: object
    person_uid: str
    person: str
    event_id: str = ""  # a decision's: what a "not this person" report names (console.reports)


def _moment(text: str, field: str) -> int:
    if not text:
        return 0
    try:
        return int(datetime.datetime.fromisoformat(text).timestamp() * 1_000_000)
    except ValueError as exc:
        raise FacegateError(f"{field}: a date or date and time (2026-11-23T08:00)") from exc


def query(ctx: Ctx) -> dict[str, str]:
    return {k: ctx.request.query_params.get(k, "").strip()[:200] for k in ("person", "device", "door", "decision", "kind", "since", "until")}


def search(ctx: Ctx) -> tuple[dict[str, str], list[Row]]:
    q = query(ctx)
    store = ctx.console.store
    uid = store.find_person(q["person"]) if q["person"] and ctx.names else None
    if q["person"] and not ctx.names:
        raise FacegateError("person: your role may not search by person")
    since, until = _moment(q["since"], "since"), _moment(q["until"], "until")
    kind = q["kind"] or ("decision" if q["decision"] or q["door"] else None)
    names = ctx.console.names() if ctx.names else {}
    rows = []
    for device, r in reversed(store.audit_query(q["device"] or None, uid, since, kind, SCANNED)):
        body = r.body
        if (until and r.ts_us > until) or (q["door"] and body.get("door") != q["door"]) or (q["decision"] and body.get("decision") != q["decision"]):
            continue
        person_uid = str(body.get("person_uid") or "") if ctx.names else ""
        rows.append(Row(r.ts_us / 1e6, device, r.seq, r.kind, str(body.get("door") or ""), str(body.get("camera") or ""),
                        str(body.get("decision") or ""), body.get("score"), person_uid, names.get(person_uid, ""), str(body.get("event_id") or "")))
    return q, rows


@page("viewer")
async def audit_page(ctx: Ctx) -> Response:
    try:
        q, rows = search(ctx)
        error = ""
    except FacegateError as exc:
        q, rows, error = query(ctx), [], str(exc)
    return ctx.render("audit.html", 400 if error else 200, q=q, rows=rows[:SHOWN], total=len(rows), error=error,
                      devices=[d.id for d in ctx.console.store.devices()])


def _cell(value: object) -> str:
    # A cell a spreadsheet would run as a formula (=, +, -, @) is quoted as text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@page("viewer", "export")
async def audit_csv(ctx: Ctx) -> Response:
    try:
        _q, rows = search(ctx)
    except FacegateError as exc:
        return ctx.render("message.html", 400, title="Bad query", text=str(exc))
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ["time", "device", "seq", "kind", "door", "camera", "decision", "score"] + (["person_uid", "person"] if ctx.names else [])
    writer.writerow(columns)
    for r in rows:
        cells = [datetime.datetime.fromtimestamp(r.at).isoformat(timespec="seconds"), r.device, r.seq, r.kind, r.door, r.camera, r.decision, r.score]
        writer.writerow([_cell(c) for c in cells + ([r.person_uid, r.person] if ctx.names else [])])
    headers = {**HEADERS, "Content-Disposition": 'attachment; filename="facegate-audit.csv"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@page("viewer", "verify")
async def verify(ctx: Ctx) -> Response:
    store, keys = ctx.console.store, ctx.console.hub.signing_keys.public_keys()

    def run() -> list[dict]:
        return [dict(zip(("records", "problem"), verify_device_chain(store, d.id, d.sign_pub, keys), strict=True), device=d.id) for d in store.devices()]

    results = await run_in_threadpool(run)
    return ctx.render("verify.html", results=results, alerts=store.alerts(50))


@page("admin")
async def hub_log(ctx: Ctx) -> Response:
    return ctx.render("hublog.html", rows=list(reversed(ctx.console.review.history(500))))


ROUTES = [Route("/audit", audit_page), Route("/audit.csv", audit_csv), Route("/audit/verify", verify), Route("/hub-log", hub_log)]
