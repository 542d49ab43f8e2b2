"""The hub: signed bundles per group / device, and the service that ingests what devices send.

`Hub` holds the store and the hub's keys (`<data_dir>/hub_sign.key` signs bundles; `hub_seal.key`
opens enrollments devices upload). `Hub.bundles(...)` builds a group's bundle (every live person
of that group, or only those changed since its last bundle: `sync.hub.deltas`), sealed once under
the group's key (`sync.hub.epochs`), plus the erases still owed to any of its devices; a device's
bundle does the same for one device and its groups. A device that cannot build on a delta asks
for a resync and gets a full bundle, so a lost bundle still heals: for a group, a catch-up on its
own topic (`sync.hub.catch_up`), as does a device new to a group whose members take deltas.

`HubService` (`facegate hub serve`) subscribes through a shared subscription
(`$share/<share_group>/facegate/v1/devices/+/<leaf>`), so several instances split the load; a
retained status is not delivered to shared subscribers, so each instance also takes statuses
directly. Audit batches go through `HubStore.ingest_audit` (chain + signatures, de-dup by
(device, seq)) and are acked; a break is stored as an alert and logged, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import HubConfig
from edge.errors import FacegateError, ProtocolError
from edge.gallery.crypto import generate_kek_file, read_kek_file
from edge.identity import DeviceIdentity, raw_public
from sync import protocol
from sync.broker import configure_client
from sync.bundle import BundleContent, GroupKey, build_bundle
from sync.hub import audit_prune, catch_up, deltas, epochs, guard, withdrawals
from sync.hub.guard import AlertLimiter, ResyncPacer
from sync.hub.ingest import GapWatch, ack_message, resend_message
from sync.hub.keys import HubSigningKeys
from sync.hub.reports import MatchReports
from sync.hub.review import accept_upload
from sync.hub.store import Device, HubStore

log = logging.getLogger("facegate.hub")
LEAVES = (protocol.AUDIT, protocol.ENROLL, protocol.GALLERY_ACK, protocol.RESYNC, protocol.REPORT_STATUS)
AUDIT_PRUNE_INTERVAL_S = 3600.0  # [hub] audit_retention_days is in days: an hourly prune keeps within an hour of it


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    payload: bytes
    scope: str
    seq: int
    persons: int  # persons sent (a delta: the changed ones)
    recipients: tuple[str, ...]
    kind: str = "full"  # or "incremental"


class Hub:
    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        data_dir = Path(cfg.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = Path(cfg.key_file) if cfg.key_file else data_dir / "hub.key"
        kek = read_kek_file(key_path) if key_path.exists() else generate_kek_file(key_path)
        # The hub's key pair has the same shape and file handling as a device's (0600, made once);
        # every signed message uses the CURRENT signing key, which rotations change (sync/hub/keys.py).
        identity = DeviceIdentity.open(data_dir / "keys")
        self.signing_keys = HubSigningKeys(data_dir / "keys", identity.signing_key)
        self.identity = dataclasses.replace(identity, signing_key=self.signing_keys.current())
        self.store = HubStore.open(cfg.database, data_dir, kek)

    def public_keys(self) -> dict[str, str]:
        return {"hub_sign_key": raw_public(self.identity.signing_key.public_key()).hex(),
                "hub_seal_key": raw_public(self.identity.sealing_key.public_key()).hex()}

    def _build(self, scope: str, topic: str, groups: tuple[str, ...], recipients: dict[str, X25519PublicKey], full: bool = False,
               newcomers: tuple[str, ...] = ()) -> Outgoing:
        """`newcomers`: recipients left out of the delta-or-full choice (each gets a catch-up)."""
        plan = deltas.plan(self.store, scope, groups, [d for d in recipients if d not in newcomers], full)
        erases = self.store.pending_erases(list(recipients))
        seq = self.store.next_seq(scope)
        key = epochs.group_key(self.store, scope, recipients)
        if plan.kind == "incremental" and plan.base_epoch is not None and _held(key, plan.base_epoch):
            key = dataclasses.replace(key, wraps={})  # the devices hold or derive this epoch's key: sealed once, no per-device bytes
        content = BundleContent(scope, plan.kind, seq, plan.base_seq, int(time.time()), plan.upserts, plan.removes, tuple(erases))
        payload = build_bundle(content, self.identity.signing_key, recipients, key)
        self.store.record_bundle(scope, seq, len(plan.upserts), erases, list(recipients), plan.version, key.epoch)
        return Outgoing(topic, payload, scope, seq, len(plan.upserts), tuple(sorted(recipients)), plan.kind)

    def bundles(self, group: str | None = None, device: str | None = None, full: bool = False) -> list[Outgoing]:
        """Bundles for one group, one device, or (neither) every group with devices and every
        device in no group: deltas since each scope's last bundle where its devices can take one
        (sync.hub.deltas), full bundles otherwise or with `full`."""
        devices = self.store.devices()
        keys = _seal_keys(devices)
        if device is not None:
            d = self.store.device(device)
            return [self._build(f"device:{d.id}", protocol.device_topic(d.id, protocol.GALLERY), d.groups, {d.id: keys[d.id]}, full)]
        groups = [group] if group is not None else self.store.groups()
        out = []
        for g in groups:
            members = {d.id: keys[d.id] for d in devices if g in d.groups}
            if members:
                out += self._group_bundles(g, members, full)
        if group is None:
            out += [self._build(f"device:{d.id}", protocol.device_topic(d.id, protocol.GALLERY), (), {d.id: keys[d.id]}, full) for d in devices if not d.groups]
        return out

    def _group_bundles(self, group: str, members: dict[str, X25519PublicKey], full: bool) -> list[Outgoing]:
        """The group's bundle; before it, a catch-up for each member that never applied one of
        the scope while the others take a delta (a new member must not make everyone re-fetch
        the whole gallery). Catch-ups go first: a member that gets the delta before its
        catch-up refuses it as a gap and asks for one more catch-up."""
        scope, topic = f"group:{group}", protocol.group_gallery_topic(group)
        newcomers: tuple[str, ...] = ()
        if not full and catch_up.possible(self.store, scope):
            acked = self.store.acked_devices(scope)
            if acked & members.keys():
                newcomers = tuple(sorted(members.keys() - acked))
        bundle = self._build(scope, topic, (group,), members, full, newcomers)
        if bundle.kind == "full":  # the delta would be as big: everyone has it whole anyway
            return [bundle]
        return [self._catch_up(d, group, members) for d in newcomers] + [bundle]

    def _catch_up(self, device: str, group: str, members: dict[str, X25519PublicKey]) -> Outgoing:
        made = catch_up.build(self.store, self.identity.signing_key, device, group, members)
        return Outgoing(protocol.device_topic(device, protocol.GALLERY), made.payload, f"group:{group}", made.seq, made.persons, (device,), "full")

    def resync(self, device_id: str, scope: str) -> Outgoing | None:
        """A full bundle of `scope` for a device of it that asked (it could not build on the last
        one): for a group whose members take deltas, a catch-up for that device alone."""
        kind, _, name = scope.partition(":")
        d = self.store.device(device_id)
        if kind == "device" and name == device_id:
            return self.bundles(device=device_id, full=True)[0]
        if kind == "group" and name in d.groups:
            if catch_up.possible(self.store, scope):
                return self._catch_up(device_id, name, _seal_keys(m for m in self.store.devices() if name in m.groups))
            return self.bundles(group=name, full=True)[0]
        return None

    def close(self) -> None:
        self.store.close()


def _seal_keys(devices: Iterable[Device]) -> dict[str, X25519PublicKey]:
    """Each device's X25519 key by id: what a bundle's key is wrapped to."""
    return {d.id: X25519PublicKey.from_public_bytes(bytes.fromhex(d.seal_pub)) for d in devices}


def _held(key: GroupKey, base_epoch: int) -> bool:
    """Whether devices at a bundle of `base_epoch` hold `key` already or derive it by the ratchet."""
    return base_epoch == key.epoch or (key.ratchet_base is not None and key.ratchet_base <= base_epoch < key.epoch)


def mqtt_client(cfg: HubConfig, client_id: str, clean: bool = False) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    configure_client(client, cfg, "hub")  # TLS, login; refuses a broker off this host in clear
    client.reconnect_delay_set(1, 10)
    return client


def _connect_props(expiry: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry
    return props


def publish(cfg: HubConfig, messages: list[Outgoing], timeout: float = 60.0) -> None:
    """Publishes bundles QoS 1 and waits for the broker's PUBACKs (the devices ack separately)."""
    publish_raw(cfg, [(m.topic, m.payload) for m in messages], timeout)


def publish_raw(cfg: HubConfig, messages: list[tuple[str, bytes]], timeout: float = 60.0, retain: bool = False, name: str = "admin") -> None:
    """(topic, payload) pairs, QoS 1, from a short-lived admin connection; returns once the broker
    acknowledged each one (PUBACK) and raises FacegateError if it did not."""
    if not messages:
        return
    client = mqtt_client(cfg, f"facegate-{name}-{socket.gethostname()}-{time.monotonic_ns() % 10**9}")
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: None if reason.is_failure else connected.set()
    try:
        client.connect(cfg.broker_host, cfg.broker_port, 30, clean_start=True)
    except OSError as exc:
        raise FacegateError(f"hub: cannot reach the broker {cfg.broker_host}:{cfg.broker_port} ({exc})") from exc
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise FacegateError(f"hub: the broker {cfg.broker_host}:{cfg.broker_port} did not accept the connection")
        infos = [(topic, client.publish(topic, payload, qos=1, retain=retain)) for topic, payload in messages]
        for topic, info in infos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise FacegateError(f"hub: the broker did not acknowledge {topic} within {timeout:.0f} s")
    finally:
        client.disconnect()
        client.loop_stop()


class HubService:
    """`facegate hub serve`: ingest, acks, resyncs and statuses until `stop()`."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.cfg = hub.cfg
        self.client_id = self.cfg.client_id or f"facegate-hub-{socket.gethostname()}"
        self.connected = threading.Event()
        self.handled = 0
        self.refused = 0  # messages refused (bad schema, signature, size…) or whose handler failed
        self.alerts = AlertLimiter(self._store_alert)
        self.resyncs = ResyncPacer(self.cfg.resync_min_interval_s)
        self._last_prune: float | None = None  # monotonic time of the last audit prune
        self.gaps = GapWatch(self.cfg.audit_gap_grace_s, self.cfg.resync_min_interval_s)  # audit gaps: one alert each, paced resend requests
        self.reports = MatchReports(hub.store)  # "not this person" reports: the devices' answers
        self.client = mqtt_client(self.cfg, self.client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        # "Connected" once the broker granted the subscriptions: a message published before the
        # SUBACK would reach no hub (and wait for the device's resend).
        self.client.on_subscribe = lambda *_a: self.connected.set()

    def start(self) -> HubService:
        self.client.connect_async(self.cfg.broker_host, self.cfg.broker_port, 30, clean_start=False, properties=_connect_props(7 * 86400))
        self.client.loop_start()
        return self

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the hub: %s", reason)
            return
        share = f"$share/{self.cfg.share_group}/" if self.cfg.share_group else ""
        subs = [(f"{share}{protocol.PREFIX}/devices/+/{leaf}", 1) for leaf in LEAVES]
        subs.append((f"{protocol.PREFIX}/devices/+/{protocol.STATUS}", 1))
        client.subscribe(subs)
        log.info("hub %s connected to %s:%d", self.client_id, self.cfg.broker_host, self.cfg.broker_port)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        # paho runs this in its network thread: an exception escaping here kills the thread and
        # the hub would go on running deaf, so nothing escapes (sync/hub/guard.py).
        try:
            parts = msg.topic.split("/")
            if len(parts) < 5 or "/".join(parts[4:]) not in guard.MAX_BYTES:
                return
            device, leaf, payload = parts[3], "/".join(parts[4:]), bytes(msg.payload)
        except Exception:  # noqa: BLE001 - a malformed message object must not kill the network thread
            log.exception("unreadable message")
            return
        try:
            protocol.check_id(device)
            guard.check_size(leaf, payload)
            self._handle(client, device, leaf, payload)
        except Exception as exc:  # noqa: BLE001 - one bad message (or a bug it triggers) must not stop the hub
            self.refused += 1
            if isinstance(exc, FacegateError):
                log.warning("device %s %s: %s", device[:64], leaf, exc)
            else:  # not a refusal we foresaw: a bug; the traceback is what fixes it
                log.exception("device %s %s: handler failed", device[:64], leaf)
            try:
                self.alerts.alert(device[:64], leaf, exc, len(payload))
            except Exception:  # noqa: BLE001 - a failing store must not kill the network thread either
                log.exception("cannot store the alert")
        self.handled += 1

    def _store_alert(self, device: str, text: str) -> None:
        self.hub.store.alert(device, text)

    def tick(self) -> None:
        """Periodic work outside message handling (`hub serve` calls it every second): summary
        alerts that are due, resync answers whose pacing window has passed, audit pruning."""
        self.alerts.flush()
        for scope, device in self.resyncs.due():
            self._answer_resync(self.client, device, scope)
        self._gaps_due()
        self._prune_due()

    def _prune_due(self) -> None:
        """`[hub] audit_retention_days`: prune once at start and then every AUDIT_PRUNE_INTERVAL_S."""
        now = time.monotonic()
        if self.cfg.audit_retention_days <= 0 or (self._last_prune is not None and now - self._last_prune < AUDIT_PRUNE_INTERVAL_S):
            return
        self._last_prune = now
        try:
            audit_prune.prune_all(self.hub.store, self.hub.identity.signing_key, self.hub.signing_keys.public_keys(), self.cfg.audit_retention_days)
        except FacegateError as exc:  # the store is busy or broken: the next interval tries again
            log.error("hub audit prune failed: %s", exc)

    def _gaps_due(self) -> None:
        key = self.hub.identity.signing_key
        for due in self.gaps.due():
            if due.alert:
                log.error("device %s: audit records missing: %s", due.device, due.problem)
                self.hub.store.alert(due.device, f"audit: records {due.from_seq}.. never arrived ({due.problem}); asked the device to resend them")
            if due.ask:
                self.client.publish(protocol.device_topic(due.device, protocol.RESEND), resend_message(due.device, due.from_seq, key), qos=1)

    def alive(self) -> bool:
        """False once paho's network thread is gone: `hub serve` then exits non-zero for systemd."""
        thread = getattr(self.client, "_thread", None)  # paho keeps no public handle on its loop thread
        return thread is not None and thread.is_alive()

    def _answer_resync(self, client: mqtt.Client, device: str, scope: str) -> None:
        out = self.hub.resync(device, scope)
        if out is not None:
            client.publish(out.topic, out.payload, qos=1)

    def _handle(self, client: mqtt.Client, device: str, leaf: str, payload: bytes) -> None:
        store = self.hub.store
        if leaf == protocol.STATUS:
            if payload:  # an empty retained payload clears the retained status: nothing to store
                status = protocol.decode(payload, "status")
                if status["device"] != device:
                    raise ProtocolError(f"status on {device}'s topic claims {status['device']!r}")
                store.record_status(device, status)  # UPDATE … WHERE id: an unregistered device's status changes no row
        elif leaf == protocol.AUDIT:
            result = store.ingest_audit(device, payload)
            if result.problem and not result.gap:
                log.error("device %s: audit stream broken: %s", device, result.problem)
            key = self.hub.identity.signing_key
            client.publish(protocol.device_topic(device, protocol.ACK), result.ack(device, key), qos=1)
            # A gap: records left the device without reaching the hub (e.g. a forged ack emptied its
            # outbox); acted on once it outlives [hub] audit_gap_grace_s (GapWatch).
            self.gaps.observe(device, result)
            self._gaps_due()
        elif leaf == protocol.GALLERY_ACK:
            ack = protocol.decode(payload, "gallery_ack")
            if ack["device"] != device:
                raise ProtocolError(f"gallery ack on {device}'s topic claims {ack['device']}")
            store.device(device)
            confirmed = store.record_gallery_ack(ack)
            for uid in confirmed:
                log.info("device %s confirmed the erasure of %s", device, uid)
            if not ack["ok"]:
                log.warning("device %s refused %s seq %d: %s", device, ack["scope"], ack["seq"], ack["error"])
        elif leaf == protocol.RESYNC:
            request = protocol.decode(payload, "resync")
            if request["device"] != device:
                raise ProtocolError(f"resync on {device}'s topic claims {request['device']!r}")
            store.device(device)  # unregistered: refused before any bundle is built
            # A catch-up goes to the asking device alone: paced per device, or one would starve the others.
            if self.resyncs.request(request["scope"], device, request["scope"].startswith("group:") and catch_up.possible(store, request["scope"])):
                self._answer_resync(client, device, request["scope"])
        elif leaf == protocol.REPORT_STATUS:
            report = self.reports.record_status(device, payload)
            if report is not None:
                log.info("device %s: report %s %s %s", device, report.id, report.state, report.code)
        elif leaf == protocol.ENROLL and withdrawals.is_withdrawal(payload):
            self._withdrawal(client, device, payload)
        elif leaf == protocol.ENROLL:
            # Checked (device, topic, signature, audit record) before anything opens; never merged.
            outcome = accept_upload(store, device, payload, self.hub.identity.sealing_key)
            log.info("device %s: enrollment %s -> %s", device, outcome.uid, outcome.action)
            client.publish(protocol.device_topic(device, protocol.ACK), ack_message(device, self.hub.identity.signing_key, enrollments=[outcome.uid]), qos=1)

    def _withdrawal(self, client: mqtt.Client, device: str, payload: bytes) -> None:
        """A kiosk consent withdrawal: checked, the person erased, the erase pushed to the fleet at once."""
        message = withdrawals.check_withdrawal(self.hub.store, device, payload)
        if withdrawals.apply_withdrawal(self.hub.store, device, message):
            for out in self.hub.bundles():
                client.publish(out.topic, out.payload, qos=1)
        log.info("device %s: consent withdrawal of %s", device, message["uid"])
        client.publish(protocol.device_topic(device, protocol.ACK), ack_message(device, self.hub.identity.signing_key, enrollments=[message["uid"]]), qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
