"""Rules between keys: what no single key's type, range or choices can say.

A rule belongs to a table (`"sync"`, `"door"`; `""` for rules between tables), names the keys it
reads, and returns the problem, starting with the dotted key, or None. The loader runs a rule
only when every key it reads has a valid value, so one mistake is reported once and not again
as each rule it happens to break. A table's rules see its values as attributes: a built table,
or the same keys read from a file that has other problems.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from edge.access.schedule import parse_date, parse_window, parse_zone
from edge.errors import ConfigError

Check = Callable[[Any, str], "str | None"]
# Without [[camera]] the cameras come from `facegate run --source`, named cam0, cam1, ...
SOURCE_CAMERA = re.compile(r"cam\d+")


@dataclass(frozen=True, slots=True)
class Rule:
    reads: tuple[str, ...]  # the keys it needs valid values of ("align.landmarks" between tables)
    check: Check  # (table, where) -> problem or None


RULES: dict[str, list[Rule]] = {}


def rule(table: str, *reads: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES.setdefault(table, []).append(Rule(reads, check))
        return check

    return register


def table_problems(table: str, values: Any, where: str, bad: Collection[str] = ()) -> list[str]:
    """What the rules of `table` find in `values`, leaving out every rule that reads a key in
    `bad` (a key whose value is wrong, or a whole table that is)."""
    found = []
    for r in RULES.get(table, ()):
        if not any(key in bad or key.partition(".")[0] in bad for key in r.reads):
            problem = r.check(values, where)
            if problem is not None:
                found.append(problem)
    return found


def enforce(table: Any, name: str) -> None:
    """`__post_init__` of a table with rules: ConfigError listing every rule it breaks."""
    found = table_problems(name, table, name)
    if found:
        raise ConfigError.listing(found)


@rule("quality", "min_brightness", "max_brightness")
def _brightness(q: Any, where: str) -> str | None:
    if q.min_brightness < q.max_brightness:
        return None
    got = f"got {q.min_brightness} and {q.max_brightness}"
    return f"{where}.min_brightness: must be below {where}.max_brightness ({got})"


@rule("sync", "broker_host", "device_id")
def _device_id(s: Any, where: str) -> str | None:
    if s.broker_host and not s.device_id:
        return f"{where}.device_id: required when {where}.broker_host is set"
    return None


@rule("sync", "broker_host", "hub_sign_key_file")
def _hub_sign_key(s: Any, where: str) -> str | None:
    if s.broker_host and not s.hub_sign_key_file:
        return f"{where}.hub_sign_key_file: required when {where}.broker_host is set (bundles must be verifiable)"
    return None


@rule("sync", "tls_cert_file", "tls_key_file")
@rule("hub", "tls_cert_file", "tls_key_file")
def _client_key(t: Any, where: str) -> str | None:
    if bool(t.tls_cert_file) != bool(t.tls_key_file):
        return f"{where}.tls_key_file: a client certificate needs its key and the other way round"
    return None


@rule("sync", "username", "password_file")
@rule("hub", "username", "password_file")
def _password_user(t: Any, where: str) -> str | None:
    if t.password_file and not t.username:
        return f"{where}.username: required when {where}.password_file is set (a password logs in as a user)"
    return None


@rule("sync", "reconnect_min_s", "reconnect_max_s")
def _reconnect(s: Any, where: str) -> str | None:
    if s.reconnect_min_s > s.reconnect_max_s:
        return f"{where}.reconnect_min_s: must not exceed {where}.reconnect_max_s"
    return None


@rule("liveness", "target_apcer", "calibration")
def _calibration(lv: Any, where: str) -> str | None:
    if lv.target_apcer > 0.0 and not lv.calibration:
        return f"{where}.calibration: required when {where}.target_apcer is set"
    return None


@rule("metrics", "address")
def _address(m: Any, where: str) -> str | None:
    try:
        ipaddress.ip_address(m.address)
    except ValueError:
        return f"{where}.address: must be an IP address such as 127.0.0.1 or :: (got {m.address!r})"
    return None


# Endpoints only this host can reach: without CURVE, where a connection comes from is all that
# stands between the control socket and anyone on the network.
_LOOPBACK_TCP = re.compile(r"tcp://(127(?:\.\d{1,3}){3}|\[::1\]|localhost):(\d{1,5}|\*)")


def _zmq_endpoint_problem(endpoint: str, key: str, curve: bool) -> str | None:
    if endpoint.startswith("ipc://"):
        path = endpoint.removeprefix("ipc://")
        if not path.startswith("/"):
            return f"{key}: an ipc:// endpoint is an absolute file path such as ipc:///run/facegate/control (got {endpoint!r})"
        return None
    if curve and endpoint.startswith("tcp://"):
        return None
    if _LOOPBACK_TCP.fullmatch(endpoint):
        return None
    if not endpoint.startswith("tcp://"):
        return f"{key}: must be ipc:///absolute/path or tcp://host:port (got {endpoint!r})"
    return (f"{key}: {endpoint} can be reached from other hosts; without CURVE ([zmq] curve_secret_key_file, "
            "docs/door.md) only ipc:// or loopback tcp://127.0.0.1 / tcp://[::1] / tcp://localhost endpoints are allowed")


@rule("zmq", "events", "control", "curve_secret_key_file")
def _zmq_endpoints(z: Any, where: str) -> str | None:
    for name in ("events", "control"):
        endpoint = getattr(z, name)
        problem = endpoint and _zmq_endpoint_problem(endpoint, f"{where}.{name}", bool(z.curve_secret_key_file))
        if problem:
            return problem
    return None


@rule("zmq", "curve_secret_key_file", "allowed_clients_dir")
def _zmq_allow_list(z: Any, where: str) -> str | None:
    if bool(z.curve_secret_key_file) != bool(z.allowed_clients_dir):
        return (f"{where}.allowed_clients_dir: CURVE needs both curve_secret_key_file and allowed_clients_dir "
                "(the clients let in); set both or neither")
    return None


@rule("zmq", "withdraw_clients", "curve_secret_key_file")
def _zmq_withdraw(z: Any, where: str) -> str | None:
    bad = [n for n in z.withdraw_clients if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", n)]
    if bad:
        return f"{where}.withdraw_clients: {bad[0]!r} is not a key name (NAME of <allowed_clients_dir>/NAME.key)"
    if z.withdraw_clients and not z.curve_secret_key_file:
        return f"{where}.withdraw_clients: needs CURVE (curve_secret_key_file): a withdrawal token is bound to the client's key"
    return None


@rule("hub", "database")
def _database(h: Any, where: str) -> str | None:
    if h.database and not h.database.startswith(("postgresql://", "postgres://", "sqlite:///")):
        forms = '"" (SQLite in data_dir), sqlite:///path or postgresql://...'
        return f"{where}.database: {forms} (got {h.database!r})"
    return None


@rule("", "liveness.enabled", "liveness.challenge", "align.landmarks")
def _challenge_needs_mesh(cfg: Any, where: str) -> str | None:
    # The head-turn challenge reads yaw from FaceMesh; without it no track could ever pass.
    if cfg.liveness.enabled and cfg.liveness.challenge != "none" and cfg.align.landmarks != "mesh":
        return "liveness.challenge: needs align.landmarks = \"mesh\""
    return None


@rule("camera", "source")
def _source(cam: Any, where: str) -> str | None:
    return None if cam.source else f"{where}.source: required (a file, /dev/videoN, URL or folder)"


@rule("camera", "roi")
def _roi(cam: Any, where: str) -> str | None:
    roi = cam.roi
    if roi and (len(roi) != 4 or roi[2] <= 0 or roi[3] <= 0 or min(roi[:2]) < 0):
        return f"{where}.roi: must be [x, y, width, height] with a positive size (got {list(roi)})"
    return None


@rule("door", "camera")
def _door_camera(door: Any, where: str) -> str | None:
    return None if door.camera else f"{where}.camera: required (the camera whose decisions open this door)"


@rule("door", "liveness_uncertain_band")
def _uncertain_band(door: Any, where: str) -> str | None:
    band = door.liveness_uncertain_band
    if band and (len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0):
        return f"{where}.liveness_uncertain_band: must be [low, high] with 0 <= low <= high <= 1, or [] (got {list(band)})"
    return None


def _first_refused(parse: Callable[[str, str], object], texts: Sequence[str], where: str) -> str | None:
    for text in texts:
        try:
            parse(text, where)
        except ConfigError as exc:
            return str(exc)
    return None


@rule("door", "schedule")
def _schedule(door: Any, where: str) -> str | None:
    return _first_refused(parse_window, door.schedule, f"{where}.schedule")


@rule("door", "holiday_schedule")
def _holiday_schedule(door: Any, where: str) -> str | None:
    return _first_refused(parse_window, door.holiday_schedule, f"{where}.holiday_schedule")


@rule("door", "holidays")
def _holidays(door: Any, where: str) -> str | None:
    return _first_refused(parse_date, door.holidays, f"{where}.holidays")


@rule("door", "timezone")
def _timezone(door: Any, where: str) -> str | None:
    return _first_refused(parse_zone, (door.timezone,), f"{where}.timezone")


@rule("door", "osdp", "osdp_port")
def _osdp_port(door: Any, where: str) -> str | None:
    if door.osdp and not door.osdp_port:
        return f"{where}.osdp_port: required with {where}.osdp = {door.osdp!r}"
    return None


@rule("door", "wiegand_d0_line", "wiegand_d1_line")
def _wiegand(door: Any, where: str) -> str | None:
    if (door.wiegand_d0_line < 0) != (door.wiegand_d1_line < 0):
        return f"{where}.wiegand_d1_line: Wiegand needs both D0 and D1 lines (or neither)"
    return None


@rule("door", "relay_line", "contact_line", "wiegand_d0_line", "wiegand_d1_line")
def _distinct_lines(door: Any, where: str) -> str | None:
    lines = [n for n in (door.relay_line, door.contact_line, door.wiegand_d0_line, door.wiegand_d1_line) if n >= 0]
    if len(set(lines)) != len(lines):
        return f"{where}: relay, contact and Wiegand lines must be different GPIO lines (got {lines})"
    return None


@rule("door", "wiegand_in_d0", "wiegand_in_d1", "wiegand_in_chip", "gpio_chip", "relay_line", "contact_line", "wiegand_d0_line", "wiegand_d1_line")
def _wiegand_in(door: Any, where: str) -> str | None:
    ins = (door.wiegand_in_d0, door.wiegand_in_d1)
    if (ins[0] < 0) != (ins[1] < 0):
        return f"{where}.wiegand_in_d1: a Wiegand reader needs both D0 and D1 input lines (or neither)"
    outs = (door.relay_line, door.contact_line, door.wiegand_d0_line, door.wiegand_d1_line) if door.wiegand_in_chip == door.gpio_chip else ()
    used = [n for n in (*ins, *outs) if n >= 0]
    if len(set(used)) != len(used):
        return f"{where}.wiegand_in_d0: the reader's lines must differ from each other and the door's other lines (got {used})"
    return None


@rule("door", "mode", "wiegand_in_d0", "osdp")
def _card_source(door: Any, where: str) -> str | None:
    if door.mode in ("card_and_face", "card_or_face") and door.wiegand_in_d0 < 0 and door.osdp != "cp":
        return f"{where}.mode: {door.mode!r} needs a card reader: wiegand_in_d0/d1, or osdp = \"cp\" (an OSDP reader)"
    if door.mode == "pin_and_face" and door.osdp != "cp":
        return f"{where}.mode: \"pin_and_face\" needs an OSDP reader with a keypad (osdp = \"cp\")"
    return None


def duplicate_names(array: str, items: Sequence[tuple[str, Any]]) -> list[str]:
    """`items`: (key path, table) of an array's tables whose name is valid."""
    names = [table.name for _, table in items]
    return [
        f"{where}.name: {table.name!r} is used by more than one {array}"
        for where, table in items
        if names.count(table.name) > 1
    ]


def door_camera_problems(doors: Sequence[tuple[str, Any]], cameras: Sequence[str] | None) -> list[str]:
    """Each door's camera is a [[camera]] name (`cameras`), or with no [[camera]] (None) one of the
    `--source` cameras cam0, cam1, ...; and no camera opens two doors. `doors`: (key path, door)
    of the doors whose camera is set and valid."""
    found, opened_by = [], {}
    for where, door in doors:
        if cameras is None and not SOURCE_CAMERA.fullmatch(door.camera):
            found.append(f"{where}.camera: {door.camera!r} is not a camera: with no [[camera]] the cameras are "
                         "--source's cam0, cam1, ...")
        elif cameras is not None and door.camera not in cameras:
            found.append(f"{where}.camera: {door.camera!r} is not a [[camera]] name ({', '.join(cameras)})")
        elif door.camera in opened_by:
            found.append(f"{where}.camera: {door.camera!r} already opens {opened_by[door.camera]} (one door per camera)")
        opened_by.setdefault(door.camera, where)
    return found


def check_door_cameras(doors: Sequence[Any], camera_names: Sequence[str]) -> list[str]:
    """The doors of a loaded config whose camera is not among `camera_names` (the cameras that
    will run, e.g. the ones `--source` gives), one line each."""
    return [
        f"door[{d.name}].camera: {d.camera!r} is not among the cameras ({', '.join(camera_names) or 'none'})"
        for d in doors
        if d.camera not in camera_names
    ]
