"""Devices and doors: status, versions, gallery version, last seen, outbox depth, pending acks,
alerts; push to a group or a device; the JSON snapshot the old status page served."""

from __future__ import annotations

import json
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from edge.errors import FacegateError
from sync.hub.console.auth import HEADERS, Ctx, page
from sync.hub.service import publish
from sync.hub.web import snapshot


def _devices(ctx: Ctx) -> list[dict]:
    store = ctx.console.store
    pending = store.pending_acks()
    alerts = store.alerts(200)
    rows = []
    for d in store.devices():
        gallery = d.status.get("gallery") if isinstance(d.status.get("gallery"), dict) else {}
        models = d.status.get("models") if isinstance(d.status.get("models"), dict) else {}
        rows.append({"id": d.id, "groups": d.groups, "online": bool(d.status.get("online")), "version": d.status.get("facegate"),
                     "models": [f"{k}: {v}" for k, v in sorted(models.items())], "gallery": gallery.get("version"),
                     "persons": gallery.get("persons"), "last_seen": d.last_seen, "audit_seq": d.audit_seq, "queue": d.status.get("queue"),
                     "pending": [f"{s} #{q}" for dev, s, q in pending if dev == d.id],
                     "alerts": [(at, p) for at, dev, p in alerts if dev == d.id][:5]})
    return rows


def _doors(ctx: Ctx) -> list[dict]:
    """Each (device, door)'s last decision, from the newest decisions the hub holds."""
    seen: dict[tuple[str, str], dict] = {}
    for device, r in reversed(ctx.console.store.audit_query(kind="decision", limit=2000)):
        door = r.body.get("door")
        if door and (device, door) not in seen:
            seen[(device, door)] = {"device": device, "door": door, "decision": r.body.get("decision"), "at": r.ts_us / 1e6}
    return sorted(seen.values(), key=lambda d: (d["device"], d["door"]))


def _pushed(ctx: Ctx) -> list[dict] | None:
    """The bundles named by `?pushed=scope@seq,...` (where a push redirects to), as the hub recorded them."""
    text = ctx.request.query_params.get("pushed")
    if text is None:
        return None
    out = []
    for item in text.split(",")[:100]:
        scope, _, seq = item.rpartition("@")
        rows = ctx.console.store.db.execute("SELECT persons, recipients_json FROM bundles WHERE scope=? AND seq=?", (scope, int(seq))) if seq.isdigit() else []
        if rows:
            out.append({"scope": scope, "seq": int(seq), "persons": rows[0][0], "devices": ", ".join(json.loads(rows[0][1]))})
    return out


@page("viewer")
async def devices(ctx: Ctx) -> Response:
    store = ctx.console.store
    return ctx.render("devices.html", devices=_devices(ctx), doors=_doors(ctx), groups=store.groups(), result=_pushed(ctx), error="")


@page("operator", "push")
async def push(ctx: Ctx) -> Response:
    form = ctx.form
    assert form is not None
    target = str(form.get("target", ""))
    kind, _, name = target.partition(":")
    hub = ctx.console.hub

    def build_and_publish():
        if kind == "group":
            if name not in hub.store.groups():
                raise FacegateError(f"no group {name!r}")
            out = hub.bundles(group=name)
        elif kind == "device":
            out = hub.bundles(device=name)
        elif target == "all":
            out = hub.bundles()
        else:
            raise FacegateError("choose a group, a device or all")
        publish(hub.cfg, out)
        return out

    try:
        out = await run_in_threadpool(build_and_publish)
    except FacegateError as exc:
        return ctx.render("devices.html", 400, devices=_devices(ctx), doors=_doors(ctx), groups=ctx.console.store.groups(), result=None, error=str(exc))
    ctx.console.audit("console.pushed", ctx.user, {"target": target, "bundles": [(o.scope, o.seq) for o in out]})
    # Redirected to a GET, so reloading the page shows the push again instead of pushing again.
    return RedirectResponse("/devices?pushed=" + quote(",".join(f"{o.scope}@{o.seq}" for o in out)), 303, headers=HEADERS)


@page("viewer")
async def status_json(ctx: Ctx) -> Response:
    data = snapshot(ctx.console.store)
    if not ctx.names:
        for d in data["decisions"]:
            d["person_uid"] = None
        data["erasures"] = [{**e, "uid": None} for e in data["erasures"]]
    return JSONResponse(data, headers=HEADERS)


ROUTES = [Route("/devices", devices), Route("/push", push, methods=["POST"]), Route("/status.json", status_json)]
