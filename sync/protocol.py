"""MQTT sync protocol v1: every topic, every payload schema, and the strict check of inbound messages.

Topics (all under `facegate/v1/`; `<id>` is a device id, `<g>` a group name):

| topic | direction | QoS | payload `type` |
|---|---|---|---|
| `devices/<id>/status` | device → hub, retained; LWT `online: false` | 1 | `status` |
| `devices/<id>/audit` | device → hub, from the outbox | 1 | `audit` |
| `devices/<id>/enroll` | device → hub, from the outbox | 1 | `enrollment`, `withdrawal` |
| `devices/<id>/ack` | hub → device, signed | 1 | `ack` (audit records + anchor, enrollments) |
| `devices/<id>/resend` | hub → device, signed | 1 | `resend` (audit records from a seq: the hub saw a gap) |
| `devices/<id>/report` | hub → device, signed | 1 | `report` ("not this person": reject that decision's match) |
| `devices/<id>/report/status` | device → hub | 1 | `report_status` (applied or refused, why) |
| `devices/<id>/gallery` | hub → device | 1 | `bundle` |
| `groups/<g>/gallery` | hub → devices of the group | 1 | `bundle` |
| `devices/<id>/gallery/ack` | device → hub | 1 | `gallery_ack` |
| `devices/<id>/gallery/resync` | device → hub | 1 | `resync` |
| `hub/keys/<key id>` | hub → every device, retained | 1 | `key_rotation` |
| `devices/<id>/events` | device → anyone, live, may be lost | 0 | `event` |

Payloads are UTF-8 JSON objects with `"v": 1` and a `"type"`. Every inbound payload goes through
`decode()` before anything reads it: size, JSON, exact key set, types and ranges, else a
`SchemaError` naming the field. Unknown keys are refused, not ignored, so a v2 field never passes
silently through a v1 device. See docs/sync.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from edge.errors import ProtocolError

VERSION = 1
PREFIX = f"facegate/v{VERSION}"
MAX_PAYLOAD = 256 * 1024 * 1024  # MQTT's own limit; bundles of 10k persons are ~30 MB
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_UID = re.compile(r"^[0-9a-f]{32}$")


class SchemaError(ProtocolError):
    """A payload is not JSON, or a field is missing, unknown, of the wrong type or out of range."""


class PayloadTooLargeError(SchemaError):
    """A message above its topic's size bound (sync.hub.guard on the hub, DEVICE_MAX_BYTES on a
    device): refused before it is parsed."""


class SignatureError(ProtocolError):
    """A signed message does not verify with the hub's key: forged, altered, or from another hub."""


class ReplayError(ProtocolError):
    """A bundle at or below the sequence already applied: a replay or a downgrade."""


class SequenceGapError(ProtocolError):
    """An incremental bundle that does not follow the last one applied; the device asks for a resync."""

    def __init__(self, message: str, scope: str, have: int) -> None:
        super().__init__(message)
        self.scope, self.have = scope, have


class FutureSequenceError(ProtocolError):
    """A bundle whose sequence is further ahead of the device's clock (and of its last sequence)
    than `[sync] max_bundle_ahead_s`: applying it would make every later real bundle a "replay"."""


def check_id(value: str, what: str = "device id") -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ProtocolError(f"{what} {value!r}: must be 1-64 of A-Z a-z 0-9 _ . - (no MQTT wildcards or slashes)")
    return value


def device_topic(device_id: str, leaf: str) -> str:
    return f"{PREFIX}/devices/{check_id(device_id)}/{leaf}"


def group_gallery_topic(group: str) -> str:
    return f"{PREFIX}/groups/{check_id(group, 'group')}/gallery"


STATUS, AUDIT, ENROLL, ACK, GALLERY, GALLERY_ACK, RESYNC, EVENTS = (
    "status", "audit", "enroll", "ack", "gallery", "gallery/ack", "gallery/resync", "events",
)
RESEND = "resend"  # hub → device: send your audit records again from `from_seq` (sync.control)
# sync.signing domains of the hub's control messages (a signature for one never verifies as another)
ACK_DOMAIN, RESEND_DOMAIN = "facegate/v1/ack", "facegate/v1/resend"
# hub → device "not this person" report (sync.reports) and the device's answer to it
REPORT, REPORT_STATUS, REPORT_DOMAIN = "report", "report/status", "facegate/v1/report"
# Hub signing-key rotations (sync.hubkeys), retained, one topic per announced key id: a device
# that was away through several rotations still finds the whole chain when it subscribes.
HUB_KEYS_TOPIC = f"{PREFIX}/hub/keys"
HUB_KEYS_FILTER = f"{HUB_KEYS_TOPIC}/+"
# What a device takes on each hub → device topic, checked before parsing (sync.agent): each far
# above the largest message the schema below allows (an ack of 100,000 enrollment uids is 3.6 MB).
# Bundles grow with the gallery and are bounded by `[sync] max_bundle_mib` instead.
DEVICE_MAX_BYTES: dict[str, int] = {ACK: 4 * 1024 * 1024, RESEND: 16 * 1024, REPORT: 16 * 1024, HUB_KEYS_TOPIC: 64 * 1024}


def scope_of_topic(topic: str) -> str:
    """`device:<id>` or `group:<g>` for a gallery topic: which sequence a bundle belongs to."""
    parts = topic.split("/")
    if len(parts) == 5 and parts[:2] == PREFIX.split("/") and parts[4] == "gallery" and parts[2] in ("devices", "groups"):
        return f"{'device' if parts[2] == 'devices' else 'group'}:{parts[3]}"
    raise SchemaError(f"{topic}: not a gallery topic")


# -- field checks: each returns the value or raises SchemaError naming the field --------------

Check = Callable[[Any, str], Any]


def _fail(where: str, want: str, value: Any) -> SchemaError:
    shown = repr(value)
    return SchemaError(f"{where}: must be {want} (got {shown[:60] + '…' if len(shown) > 60 else shown})")


def integer(lo: int = 0, hi: int = 2**63 - 1) -> Check:
    def check(value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise _fail(where, f"an integer in [{lo}, {hi}]", value)
        return value

    return check


def number(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise _fail(where, "a finite number", value)
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(where, "true or false", value)
    return value


def text(max_len: int = 4096, pattern: re.Pattern[str] | None = None) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > max_len or (pattern is not None and not pattern.match(value)):
            raise _fail(where, f"a string of at most {max_len} characters" + (f" matching {pattern.pattern}" if pattern else ""), value)
        return value

    return check


def optional(inner: Check) -> Check:
    return lambda value, where: None if value is None else inner(value, where)


def one_of(*choices: str) -> Check:
    def check(value: Any, where: str) -> str:
        if value not in choices:
            raise _fail(where, f"one of {', '.join(choices)}", value)
        return value

    return check


def list_of(inner: Check, max_items: int = 1_000_000) -> Check:
    def check(value: Any, where: str) -> list[Any]:
        if not isinstance(value, list) or len(value) > max_items:
            raise _fail(where, f"a list of at most {max_items} items", value)
        return [inner(v, f"{where}[{i}]") for i, v in enumerate(value)]

    return check


def mapping(key: Check, value_check: Check, max_items: int = 100_000) -> Check:
    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) > max_items:
            raise _fail(where, f"an object of at most {max_items} entries", value)
        return {key(k, f"{where} key"): value_check(v, f"{where}.{k}") for k, v in value.items()}

    return check


def obj(spec: dict[str, Check], optional_keys: tuple[str, ...] = ()) -> Check:
    """An object with exactly the keys of `spec` (those in `optional_keys` may be absent)."""

    def check(value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        unknown = sorted(set(value) - set(spec))
        if unknown:
            raise SchemaError(f"{where}: unknown field(s) {', '.join(map(str, unknown))[:200]}")
        missing = [k for k in spec if k not in value and k not in optional_keys]
        if missing:
            raise SchemaError(f"{where}: missing field(s) {', '.join(missing)}")
        return {k: spec[k](value[k], f"{where}.{k}") for k in spec if k in value}

    return check


HEX64 = text(64, _HEX64)
KEY_ID = text(16, re.compile(r"^[0-9a-f]{16}$"))  # sync.signing.key_id
UID = text(32, _UID)


def _any_json(value: Any, _where: str) -> Any:
    return value  # audit bodies: JSON by construction here, checked by the hub's chain check


ANY_JSON: Check = _any_json
AUDIT_RECORD = obj({"seq": integer(1), "ts_us": integer(), "kind": text(32), "body": mapping(text(256), ANY_JSON), "prev": HEX64, "hash": HEX64, "sig": text(128)})

# Inbound to a device: what the hub may send.
SCHEMAS: dict[str, Check] = {
    # Signed by the hub (sync.control, domain facegate/v1/ack) for one `device`; `anchor` is the
    # hub's (seq, hash) of the device's last accepted audit record. key_id / sig may be absent
    # here only so that an unsigned ack is refused as unsigned (SignatureError), not as a schema error.
    "ack": obj(
        {"v": integer(1, 1), "type": one_of("ack"), "device": text(64), "audit_upto": optional(integer()), "enrollments": list_of(UID, 100_000),
         "anchor": obj({"seq": integer(1), "hash": HEX64}), "key_id": KEY_ID, "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))},
        optional_keys=("audit_upto", "enrollments", "anchor", "key_id", "sig"),
    ),
    # Signed by the hub (domain facegate/v1/resend): the hub's audit chain of `device` stops at a
    # gap; records from `from_seq` on are wanted again.
    "resend": obj(
        {"v": integer(1, 1), "type": one_of("resend"), "device": text(64), "from_seq": integer(1), "created": integer(),
         "key_id": KEY_ID, "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))},
        optional_keys=("key_id", "sig"),
    ),
    # Signed by the hub (domain facegate/v1/report): an operator says decision `event_id` of this
    # `device` did not show `person_uid`; `report_id` is unique (the device keeps those it took).
    "report": obj(
        {"v": integer(1, 1), "type": one_of("report"), "device": text(64), "report_id": UID, "event_id": text(64, re.compile(r"^[0-9a-f]{8,64}$")),
         "person_uid": UID, "reason": text(500), "created": integer(), "key_id": KEY_ID, "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))},
        optional_keys=("key_id", "sig"),
    ),
    "bundle": obj(
        {
            "v": integer(1, 1),
            "type": one_of("bundle"),
            "scope": text(80),
            "kind": one_of("full", "incremental"),
            "seq": integer(1),
            "base_seq": optional(integer(0)),
            "created": integer(),
            "eph": HEX64,
            "recipients": mapping(text(64), text(256, re.compile(r"^[0-9a-f]+$"))),
            "sealed": text(MAX_PAYLOAD),
            "epoch": integer(1),  # sealed under the scope's group key of this epoch (sync.bundle.GroupKey)
            "ratchet_base": integer(1),  # that key is the one of this fresh epoch ratcheted forward (sync.ratchet)
            "to": text(64),  # a catch-up: a group's full bundle for this one device, on its own topic (sync.hub.catch_up)
            "key_id": KEY_ID,
            "sig": text(128, re.compile(r"^[0-9a-f]{128}$")),
        },
        optional_keys=("epoch", "ratchet_base", "to"),  # no epoch: a content key of its own, wrapped to every recipient
    ),
    # Signed by a hub key the device already trusts (sync.hubkeys): trust `new_key`, revoke `revoke`.
    "key_rotation": obj(
        {"v": integer(1, 1), "type": one_of("key_rotation"), "new_key": HEX64, "new_key_id": KEY_ID,
         "revoke": list_of(KEY_ID, 1000), "created": integer(), "key_id": KEY_ID, "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))}
    ),
    # Outbound, checked here too so the hub side (and tests) share one definition.
    "audit": obj({"v": integer(1, 1), "type": one_of("audit"), "device": text(64), "records": list_of(AUDIT_RECORD, 10_000)}),
    # Signed by the device (`sig`, Ed25519 over every other field, sync.uploads); `audit_hash` is
    # the hash of the device's `enroll` audit record `audit_seq` the upload was built from.
    "enrollment": obj(
        {"v": integer(1, 1), "type": one_of("enrollment"), "device": text(64), "uid": UID, "audit_seq": integer(1), "audit_hash": HEX64,
         "eph": HEX64, "recipients": mapping(text(64), text(256)), "sealed": text(MAX_PAYLOAD), "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))}
    ),
    # Signed by the device (`sig`, over the domain facegate/v1/withdrawal, sync.withdrawals): a kiosk
    # consent withdrawal, bound to the device's `remove` audit record `audit_seq` (hash `audit_hash`).
    "withdrawal": obj(
        {"v": integer(1, 1), "type": one_of("withdrawal"), "device": text(64), "uid": UID, "audit_seq": integer(1), "audit_hash": HEX64,
         "sig": text(128, re.compile(r"^[0-9a-f]{128}$"))}
    ),
    "gallery_ack": obj(
        {"v": integer(1, 1), "type": one_of("gallery_ack"), "device": text(64), "scope": text(80), "seq": integer(0),
         "ok": boolean, "gallery_version": integer(), "error": text(1000)}
    ),
    # The device's answer to a report (sync.reports): `code` is edge.gallery.negatives.RejectError's, or a refusal's.
    "report_status": obj(
        {"v": integer(1, 1), "type": one_of("report_status"), "device": text(64), "report_id": UID, "state": one_of("applied", "refused"),
         "code": text(32), "reason": text(1000), "at": integer()}
    ),
    "resync": obj({"v": integer(1, 1), "type": one_of("resync"), "device": text(64), "scope": text(80), "have_seq": integer()}),
    # Retained device status (sync.status); the LWT form has only v, type, device, online.
    "status": obj(
        {"v": integer(1, 1), "type": one_of("status"), "device": text(64), "online": boolean, "facegate": text(64),
         "started": integer(), "uptime_s": number, "models": mapping(text(64), text(128), 64),
         "gallery": obj({"version": integer(), "scopes": mapping(text(80), integer(), 1000), "persons": integer()},
                        optional_keys=("version", "scopes", "persons")),
         "queue": integer()},
        optional_keys=("facegate", "started", "uptime_s", "models", "gallery", "queue"),
    ),
}


def decode(payload: bytes, expect: str) -> dict[str, Any]:
    """The checked message of type `expect`; SchemaError naming what is wrong otherwise."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_PAYLOAD:
        raise SchemaError(f"{expect}: payload must be at most {MAX_PAYLOAD} bytes")
    try:
        value = json.loads(bytes(payload).decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SchemaError(f"{expect}: payload is not UTF-8 JSON ({exc})"[:300]) from exc
    if not isinstance(value, dict) or value.get("type") != expect:
        raise SchemaError(f"{expect}: payload must be a JSON object with \"type\": \"{expect}\"")
    return SCHEMAS[expect](value, expect)


def _no_constants(name: str) -> Any:
    raise SchemaError(f"JSON constant {name} is not allowed")


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
