"""Gallery bundles, the wire format: built and signed by the hub, verified and opened by the device.

A bundle is one JSON message (`sync.protocol` schema `bundle`): a signed header (scope, full or
incremental, sequence, base sequence, time, recipients) and one sealed blob (`sync.sealing`,
readable only by the recipient devices' X25519 keys) holding the persons to add or update, the
uids leaving the scope and the uids erased everywhere.

The device checks, in this order, before it touches the gallery: schema → the scope named inside
is the scope of the topic it came on → Ed25519 signature by a hub key the device trusts, named by
`key_id` (`sync.signing`, keys from `sync.hubkeys`) → sealed to this device → inner schema →
sequence (at or below the last applied: replay/downgrade; further ahead of the device's clock
than `max_bundle_ahead_s`: refused, since it would make every later real bundle a replay; an
incremental whose base is not the last applied: gap, ask for a resync). Only then
`sync.apply.apply_bundle` applies it in one transaction (the device's half lives there, so the hub,
which shares this module, imports no gallery store). `build_bundle` is the hub's half
(`sync/hub/service.py` reuses it).

The same person documents (`PERSON`) travel up in device enrollments, sealed to the hub's key as
recipient `HUB_RECIPIENT` with `enrollment_aad` (`sync.uploads` builds them, `sync.hub.uploads`
opens them).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge.audit.records import canonical_json
from edge.errors import GalleryError
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile
from edge.names import MAX_NAME_CHARS
from sync import protocol, ratchet, sealing, signing
from sync.protocol import FutureSequenceError, ReplayError, SchemaError, SequenceGapError

_DOMAIN = "facegate/v1/bundle"
_FLOAT = np.dtype("<f4")
HUB_RECIPIENT = "hub"  # the recipient name an enrollment upload is sealed to
MAX_AHEAD_S = 7 * 86400  # `[sync] max_bundle_ahead_s`'s default


@dataclass(frozen=True, slots=True)
class BundleContent:
    scope: str  # "device:<id>" or "group:<g>"
    kind: str  # "full" or "incremental"
    seq: int
    base_seq: int | None  # incremental: the sequence it applies on top of; full: None
    created: int
    upserts: tuple[SyncPerson, ...] = ()
    removes: tuple[str, ...] = ()
    erases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GroupKey:
    """A scope's group key for one epoch (`sync.hub.epochs`): the content of every bundle of the
    epoch is sealed once under `key`; `wraps` ({device: key wrapped to its X25519 key}, with the
    ephemeral key `eph`) travel in full bundles and in the first delta of a fresh epoch, {} otherwise.
    `ratchet_base`: None for a fresh random key; else the fresh epoch whose key `sync.ratchet`
    stepped forward to this one (a member holding any epoch of the chain derives it)."""

    epoch: int
    key: bytes
    eph: str
    wraps: dict[str, str]
    ratchet_base: int | None = None


class MissingGroupKey(SequenceGapError):
    """A delta sealed under a group key epoch this device was never given: it asks for a resync
    (the full bundle carries the epoch's key wrapped to it)."""


def _aad(scope: str, seq: int) -> bytes:
    return f"{_DOMAIN}|{scope}|{seq}".encode()


def epoch_aad(scope: str, epoch: int) -> bytes:
    """What a group key of `scope`'s `epoch` is wrapped under (per device: the name is appended)."""
    return f"facegate/v1/group-key|{scope}|{epoch}".encode()


def _content_aad(scope: str, seq: int, epoch: int) -> bytes:
    return _aad(scope, seq) + f"|epoch {epoch}".encode()


def enrollment_aad(device_id: str, uid: str) -> bytes:
    """What an enrollment upload of person `uid` from `device_id` is sealed under."""
    return f"facegate/v1/enrollment|{device_id}|{uid}".encode()


def _profile_doc(p: PersonProfile) -> dict[str, Any]:
    return {
        "name": p.name, "groups": list(p.groups), "consent": p.consent, "consent_at": p.consent_at, "consent_text": p.consent_text,
        "retention_days": p.retention_days, "valid_from": p.valid_from, "valid_until": p.valid_until, "created_by": p.created_by,
        "cards": list(p.cards), "pin_hash": p.pin_hash,  # credentials: inside the sealed part only
    }


def person_doc(person: SyncPerson) -> dict[str, Any]:
    """The wire form of one person (also what a device uploads to the hub, sealed)."""
    return {
        "uid": person.uid,
        "profile": _profile_doc(person.profile),
        "model": person.model,
        "templates": [base64.b64encode(np.asarray(e, dtype=_FLOAT).tobytes()).decode() for e in person.embeddings],
        "qualities": [float(q) for q in person.qualities],
    }


def build_bundle(content: BundleContent, hub_key: Ed25519PrivateKey, recipients: dict[str, X25519PublicKey], group_key: GroupKey | None = None,
                 to: str | None = None) -> bytes:
    """The hub's half: seal the persons, sign the whole. With `group_key`, sealed once under it
    (its wraps, if any, ride along); without, to a fresh content key wrapped to `recipients`.
    `to`: a catch-up (`sync.hub.catch_up`): a full bundle of a group scope for that one member,
    sent on its own topic; the signed header names it."""
    if (content.kind == "full") != (content.base_seq is None):
        raise ValueError("a full bundle has no base_seq; an incremental one needs one")
    inner = canonical_json({"upserts": [person_doc(p) for p in content.upserts], "removes": list(content.removes), "erases": list(content.erases)}).encode()
    message: dict[str, Any] = {
        "v": protocol.VERSION, "type": "bundle", "scope": content.scope, "kind": content.kind, "seq": content.seq,
        "base_seq": content.base_seq, "created": content.created}
    if to is not None:
        if content.kind != "full" or not content.scope.startswith("group:"):
            raise ValueError("a catch-up is a full bundle of a group scope")
        message["to"] = to
    if group_key is None:
        eph, wrapped, blob = sealing.seal(inner, recipients, _aad(content.scope, content.seq))
    else:
        eph, wrapped = group_key.eph, group_key.wraps
        blob = sealing.seal_with(group_key.key, inner, _content_aad(content.scope, content.seq, group_key.epoch))
        message["epoch"] = group_key.epoch
        if group_key.ratchet_base is not None:
            message["ratchet_base"] = group_key.ratchet_base
    message.update({"eph": eph, "recipients": wrapped, "sealed": base64.b64encode(blob).decode()})
    return protocol.encode(signing.sign(message, _DOMAIN, hub_key))


_PROFILE = protocol.obj(
    {
        "name": protocol.text(MAX_NAME_CHARS), "groups": protocol.list_of(protocol.text(256), 1000), "consent": protocol.boolean,
        "consent_at": protocol.optional(protocol.integer()), "consent_text": protocol.text(16384),
        "retention_days": protocol.optional(protocol.integer(1)), "valid_from": protocol.optional(protocol.integer()),
        "valid_until": protocol.optional(protocol.integer()), "created_by": protocol.text(1024),
        "cards": protocol.list_of(protocol.integer(0, 2**32 - 1), 64), "pin_hash": protocol.text(256),
    },
    optional_keys=("cards", "pin_hash"),  # persons sealed by a hub from before cards
)
PERSON = protocol.obj(
    {"uid": protocol.UID, "profile": _PROFILE, "model": protocol.text(64),
     "templates": protocol.list_of(protocol.text(65536), 64), "qualities": protocol.list_of(protocol.number, 64)}
)
_INNER = protocol.obj({"upserts": protocol.list_of(PERSON), "removes": protocol.list_of(protocol.UID), "erases": protocol.list_of(protocol.UID)})


def person_from_doc(doc: dict[str, Any], where: str) -> SyncPerson:
    """A checked person from its wire form (after `PERSON` checked the shape)."""
    try:
        profile = PersonProfile(**{k: tuple(v) if k in ("groups", "cards") else v for k, v in doc["profile"].items()})
        embeddings = tuple(np.frombuffer(base64.b64decode(t, validate=True), dtype=_FLOAT).copy() for t in doc["templates"])
    except (GalleryError, binascii.Error, ValueError) as exc:
        raise SchemaError(f"{where}: {exc}") from exc
    if not embeddings or len(embeddings) != len(doc["qualities"]) or len({e.size for e in embeddings}) != 1 or embeddings[0].size == 0:
        raise SchemaError(f"{where}: needs one or more templates of one non-zero dimension and one quality per template")
    if not all(np.isfinite(e).all() for e in embeddings):
        raise SchemaError(f"{where}: a template holds NaN or infinity")
    return SyncPerson(doc["uid"], profile, doc["model"], embeddings, tuple(doc["qualities"]))


class GroupKeys(Protocol):
    """Where a device keeps the group keys it was given, still wrapped to its own key (`sync.groupkeys`)."""

    def get(self, scope: str, epoch: int) -> tuple[str, str] | None: ...
    def newest(self, scope: str) -> tuple[int, str, str] | None: ...
    def put(self, scope: str, epoch: int, eph: str, wrapped: str) -> None: ...


def open_bundle(
    payload: bytes, topic: str, hub_keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey, device_id: str, device_key: X25519PrivateKey,
    group_keys: GroupKeys | None = None, applied_seq: int | Mapping[str, int] | None = None,
) -> BundleContent:
    """The verified, decrypted content of a bundle that arrived on `topic`; ProtocolError otherwise.

    `hub_keys`: the trusted hub keys by key id (a device's `sync.hubkeys.HubKeyring`), or one key.
    `group_keys`: the device's kept group keys (a bundle sealed under an epoch, `GroupKey`).
    `applied_seq`: the scope's last applied sequence (or every scope's, by scope), if known: a
    replay is refused as such on its signed header, before the key lookup (its epoch's key may be
    deleted since: not a gap).

    A bundle comes on its scope's topic, except a catch-up (`to` in the signed header): a full
    bundle of a group scope that the hub sends one member on that member's own gallery topic
    (`sync.hub.catch_up`), so that one device's resync does not re-send the whole gallery to
    every member. It is refused anywhere but on the topic of the device it names."""
    if isinstance(hub_keys, Ed25519PublicKey):
        hub_keys = {signing.key_id(hub_keys): hub_keys}
    message = protocol.decode(payload, "bundle")
    scope = _scope(message, protocol.scope_of_topic(topic), device_id)
    signing.verify(message, _DOMAIN, hub_keys, f"bundle {scope} seq {message['seq']}")
    if (message["kind"] == "full") != (message["base_seq"] is None) or (message["base_seq"] or 0) >= message["seq"]:
        raise SchemaError(f"bundle {scope} seq {message['seq']}: kind {message['kind']} with base_seq {message['base_seq']}")
    if isinstance(applied_seq, Mapping):
        applied_seq = applied_seq.get(scope, 0)
    if applied_seq is not None and message["seq"] <= applied_seq:
        raise ReplayError(f"bundle {scope} seq {message['seq']}: this device is at seq {applied_seq}; replayed or downgraded bundle refused")
    try:
        blob = base64.b64decode(message["sealed"], validate=True)
    except binascii.Error as exc:
        raise SchemaError(f"bundle.sealed: not base64 ({exc})") from exc
    if "epoch" in message:
        plain = _open_epoch(message, blob, scope, device_id, device_key, group_keys)
    else:
        plain = sealing.unseal(device_key, device_id, message["eph"], message["recipients"], blob, _aad(scope, message["seq"]))
    try:
        inner = _INNER(json.loads(plain), "bundle content")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SchemaError(f"bundle content: not JSON ({exc})") from exc
    upserts = tuple(person_from_doc(d, f"bundle content.upserts[{i}]") for i, d in enumerate(inner["upserts"]))
    return BundleContent(scope, message["kind"], message["seq"], message["base_seq"], message["created"], upserts, tuple(inner["removes"]), tuple(inner["erases"]))


def _scope(message: dict[str, Any], topic_scope: str, device_id: str) -> str:
    """The scope a bundle applies to, once it is known to have come where it belongs."""
    to = message.get("to")
    if to is None:
        if message["scope"] != topic_scope:
            raise SchemaError(f"bundle for {message['scope']} arrived on the topic of {topic_scope}")
        return str(message["scope"])
    if to != device_id or topic_scope != f"device:{device_id}":
        raise SchemaError(f"catch-up bundle for {to!r} arrived on the topic of {topic_scope}; only {device_id}'s own topic carries one for {device_id}")
    if message["kind"] != "full" or not str(message["scope"]).startswith("group:"):
        raise SchemaError(f"catch-up bundle for {to!r}: {message['kind']} bundle of {message['scope']} (a catch-up is a full bundle of a group)")
    return str(message["scope"])


def _open_epoch(message: dict[str, Any], blob: bytes, scope: str, device_id: str, device_key: X25519PrivateKey, group_keys: GroupKeys | None) -> bytes:
    """A bundle sealed under a group key: the key wrapped in it for this device, else the one kept
    for its epoch, else the newest kept one ratcheted forward (`sync.ratchet`) when the signed
    bundle says its key is a ratchet step of a chain that one is on. A bundle whose wraps leave
    this device out is not for it (it left the group: the epoch was rotated so that it cannot read
    on); a delta of an epoch it neither holds nor can derive asks for a resync."""
    epoch, wraps, what = message["epoch"], message["recipients"], f"bundle {scope} seq {message['seq']}"
    if wraps:
        if device_id not in wraps:
            raise sealing.NotForThisKey(f"{what}: group key epoch {epoch} is not wrapped for {device_id}")
        key = sealing.unwrap_key(device_key, device_id, message["eph"], {device_id: wraps[device_id]}, epoch_aad(scope, epoch))
    else:
        key = _kept_key(message, scope, device_id, device_key, group_keys, what)
    plain = sealing.open_with(key, blob, _content_aad(scope, message["seq"], epoch), what)
    if group_keys is None:  # kept below only once it opened the signed content
        pass
    elif wraps:
        group_keys.put(scope, epoch, message["eph"], wraps[device_id])
    elif group_keys.get(scope, epoch) is None:  # a derived key: kept wrapped to this device's own key, like the others
        eph, mine = sealing.wrap_key(key, {device_id: device_key.public_key()}, epoch_aad(scope, epoch))
        group_keys.put(scope, epoch, eph, mine[device_id])
    return plain


def _kept_key(message: dict[str, Any], scope: str, device_id: str, device_key: X25519PrivateKey, group_keys: GroupKeys | None, what: str) -> bytes:
    epoch, base = message["epoch"], message.get("ratchet_base")
    kept = group_keys.get(scope, epoch) if group_keys is not None else None
    held = None
    if kept is None and base is not None and group_keys is not None:
        newest = group_keys.newest(scope)
        if newest is not None and base <= newest[0] < epoch <= newest[0] + ratchet.MAX_STEPS:
            held, kept = newest[0], newest[1:]
    if kept is None:
        raise MissingGroupKey(f"{what}: sealed under group key epoch {epoch}, which this device was never given and cannot derive", scope, 0)
    key = sealing.unwrap_key(device_key, device_id, kept[0], {device_id: kept[1]}, epoch_aad(scope, held if held is not None else epoch))
    return key if held is None else ratchet.forward(key, scope, held, epoch)


def check_sequence(content: BundleContent, current: int, max_ahead_s: float = MAX_AHEAD_S, now_us: int | None = None) -> None:
    """ReplayError at or below `current` (the scope's last applied sequence); FutureSequenceError
    more than `max_ahead_s` ahead of max(this clock in µs, `current`); SequenceGapError for an
    incremental bundle that does not build on `current`.

    The hub's sequences are at least its clock in µs (`HubStore.next_seq`), so a real bundle is
    never far ahead of the device's clock; one that is (a hub key misused, a bug) would raise the
    floor so high that every real bundle after it, erasures included, would be refused."""
    if content.seq <= current:
        raise ReplayError(f"bundle {content.scope} seq {content.seq}: this device is at seq {current}; replayed or downgraded bundle refused")
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    limit = max(now_us, current) + int(max_ahead_s * 1_000_000)
    if content.seq > limit:
        raise FutureSequenceError(
            f"bundle {content.scope} seq {content.seq}: more than {max_ahead_s:.0f} s ahead of this device's clock and last seq {current}"
            f" (limit {limit}); refused so that it cannot block every later bundle. Check the hub's clock and this device's clock"
        )
    if content.kind == "incremental" and content.base_seq != current:
        raise SequenceGapError(f"bundle {content.scope} seq {content.seq} builds on seq {content.base_seq}, this device is at {current}", content.scope, current)
