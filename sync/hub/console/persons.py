"""Persons pages: search, enroll from photos, groups / validity / cards, erase with each device's
confirmation. Viewers never reach them (names and uids are for operators and admins)."""

from __future__ import annotations

import dataclasses
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from edge.errors import FacegateError
from edge.gallery.changes import SyncPerson
from sync.hub.console.auth import HEADERS, Ctx, page
from sync.hub.console.enroll import enroll, parse_cards, parse_day, parse_list
from sync.hub.service import publish


def _profile_fields(ctx: Ctx) -> dict:
    form = ctx.form
    assert form is not None
    return {"groups": parse_list(str(form.get("groups", ""))),
            "valid_from": parse_day(str(form.get("valid_from", "")), "valid from"),
            "valid_until": parse_day(str(form.get("valid_until", "")), "valid until", end=True),
            "cards": parse_cards(str(form.get("cards", "")))}


@page("operator")
async def persons(ctx: Ctx) -> Response:
    q = ctx.request.query_params.get("q", "").strip().casefold()[:200]
    entries = [p for p in ctx.console.store.person_entries() if p.erased is None or ctx.request.query_params.get("erased")]
    if q:
        entries = [p for p in entries if q in p.name.casefold() or p.uid.startswith(q) or any(q == g.casefold() for g in p.groups)]
    return ctx.render("persons.html", persons=entries, q=q, groups=ctx.console.store.groups())


@page("operator")
async def new_person(ctx: Ctx) -> Response:
    return ctx.render("enroll.html", groups=ctx.console.store.groups(), result=None, error="")


@page("operator", "enroll")
async def add_person(ctx: Ctx) -> Response:
    from edge.perception.faces import embedder_model_name

    form = ctx.form
    assert form is not None
    name = str(form.get("name", "")).strip()
    photos = [(f.filename or "", await f.read()) for f in form.getlist("photos") if isinstance(f, UploadFile)]
    try:
        if not name:
            raise FacegateError("name: required")
        fields = {**_profile_fields(ctx), "consent_text": str(form.get("consent_text", "")).strip()[:2000]}
        console = ctx.console
        result = await run_in_threadpool(lambda: enroll(console.store, console.perception, embedder_model_name(console.cfg), name, photos, fields, ctx.user.name))
    except FacegateError as exc:
        return ctx.render("enroll.html", 400, groups=ctx.console.store.groups(), result=None, error=str(exc))
    ctx.console.audit("console.enrolled" if result.uid else "console.enroll_failed", ctx.user,
                      {"uid": result.uid, "photos": len(photos), "accepted": sum(v.accepted for v in result.photos), "error": result.error})
    return ctx.render("enroll.html", 200 if result.uid else 422, groups=ctx.console.store.groups(), result=result, error=result.error)


def _live(ctx: Ctx, uid: str) -> SyncPerson | None:
    return next((p for p in ctx.console.store.persons() if p.uid == uid), None)


@page("operator")
async def person(ctx: Ctx) -> Response:
    uid = ctx.request.path_params["uid"]
    entry = next((p for p in ctx.console.store.person_entries() if p.uid == uid), None)
    if entry is None:
        return ctx.render("message.html", 404, title="Not found", text=f"No person {uid} on this hub.")
    erasures = ctx.console.store.erasures(uid)
    return ctx.render("person.html", entry=entry, person=_live(ctx, uid), erasures=erasures,
                      pending=any(c is None for _u, _d, _r, c in erasures), error=ctx.request.query_params.get("error", ""))


@page("operator", "person_update")
async def update_person(ctx: Ctx) -> Response:
    uid = ctx.request.path_params["uid"]
    store = ctx.console.store
    try:
        fields = _profile_fields(ctx)
        with store.db.transaction():
            old = _live(ctx, uid)
            if old is None:
                raise FacegateError(f"no live person {uid}")
            new = SyncPerson(old.uid, dataclasses.replace(old.profile, **fields), old.model, old.embeddings, old.qualities)
            store.db.execute("DELETE FROM persons WHERE uid=?", (uid,))  # re-sealed under a fresh key, as review merges do
            store.add_person(new)
    except FacegateError as exc:
        return RedirectResponse(f"/persons/{uid}?error={quote(str(exc)[:200])}", 303, headers=HEADERS)
    ctx.console.audit("console.person_updated", ctx.user, {"uid": uid, "groups": list(fields["groups"]), "cards": len(fields["cards"]),
                                                          "valid_from": fields["valid_from"], "valid_until": fields["valid_until"]})
    return RedirectResponse(f"/persons/{uid}", 303, headers=HEADERS)


@page("admin", "erase")
async def erase_person(ctx: Ctx) -> Response:
    uid = ctx.request.path_params["uid"]
    hub = ctx.console.hub
    try:
        hub.store.find_person(uid)
    except FacegateError as exc:
        return ctx.render("message.html", 404, title="Not found", text=str(exc))

    def erase_and_push() -> int:
        hub.store.erase_person(uid)
        out = hub.bundles()
        publish(hub.cfg, out)
        return len(out)

    try:
        bundles = await run_in_threadpool(erase_and_push)
    except FacegateError as exc:  # erased here; the push failed (the next push carries it)
        ctx.console.audit("console.erased", ctx.user, {"uid": uid, "push_error": str(exc)[:300]})
        return RedirectResponse(f"/persons/{uid}?error={quote('erased here; the push failed: ' + str(exc)[:150])}", 303, headers=HEADERS)
    ctx.console.audit("console.erased", ctx.user, {"uid": uid, "bundles": bundles})
    return RedirectResponse(f"/persons/{uid}", 303, headers=HEADERS)


ROUTES = [
    Route("/persons", persons), Route("/persons/new", new_person), Route("/persons", add_person, methods=["POST"]),
    Route("/persons/{uid:str}", person), Route("/persons/{uid:str}", update_person, methods=["POST"]),
    Route("/persons/{uid:str}/erase", erase_person, methods=["POST"]),
]
