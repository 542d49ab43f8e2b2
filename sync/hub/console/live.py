"""The live view: decisions as the hub stores them, pushed to the browser as server-sent events.

The stream polls the hub's audit table once a second for decision records newer than the last
it sent (the browser's `Last-Event-ID` resumes after a reconnect) and ends when the browser
goes or the console stops. Operators see the person's name and uid; viewers neither.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sync.hub.console.auth import HEADERS, Ctx, page

POLL_S = 1.0
KEEPALIVE_S = 15.0


@page("viewer")
async def live(ctx: Ctx) -> Response:
    return ctx.render("live.html")


def _events(ctx: Ctx, since_us: int, sent: set[tuple[str, int, int]]) -> tuple[list[str], int]:
    """New decisions at or after `since_us` not sent yet; `sent` keeps only those at the newest
    time (the next poll asks from there again, so two records in one microsecond both go)."""
    rows = ctx.console.store.audit_query(since_us=since_us, kind="decision", limit=200)
    names = ctx.console.names() if ctx.names and rows else {}
    out = []
    for device, r in rows:
        if (device, r.seq, r.ts_us) in sent:
            continue
        sent.add((device, r.seq, r.ts_us))
        uid = str(r.body.get("person_uid") or "") if ctx.names else ""
        data = {"at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.ts_us / 1e6)), "device": device, "seq": r.seq,
                "door": r.body.get("door"), "camera": r.body.get("camera"), "decision": r.body.get("decision"), "score": r.body.get("score"),
                **({"person_uid": uid, "person": names.get(uid, "")} if ctx.names else {})}
        out.append(f"id: {r.ts_us}\nevent: decision\ndata: {json.dumps(data)}\n\n")
        since_us = max(since_us, r.ts_us)
    sent.difference_update({k for k in sent if k[2] < since_us})
    return out, since_us


@page("viewer", "live")
async def stream(ctx: Ctx) -> Response:
    last = ctx.request.headers.get("last-event-id", "")
    since = int(last) if last.isdigit() else int(time.time() * 1e6) - 60_000_000  # the last minute, then what comes
    stopping = ctx.console.stopping

    async def events() -> AsyncIterator[str]:
        nonlocal since
        sent: set[tuple[str, int, int]] = set()
        quiet = 0.0
        yield "retry: 2000\n\n"
        while not stopping.is_set() and not await ctx.request.is_disconnected():
            chunks, since = await run_in_threadpool(_events, ctx, since, sent)  # off the event loop: the other pages go on
            for chunk in chunks:
                yield chunk
            quiet = 0.0 if chunks else quiet + POLL_S
            if quiet >= KEEPALIVE_S:
                quiet = 0.0
                yield ": keepalive\n\n"
            await asyncio.sleep(POLL_S)

    return StreamingResponse(events(), media_type="text/event-stream", headers={**HEADERS, "X-Accel-Buffering": "no"})


ROUTES = [Route("/live", live), Route("/live/stream", stream)]
