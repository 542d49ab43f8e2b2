"""The device's MQTT agent: status out, gallery bundles in, audit records and enrollments out.

`SyncAgent(cfg, open_store, audit_log).start()` … `stop()`. paho-mqtt 2.x (v2 callbacks, MQTT
v5): persistent session (clean_start=False + session expiry), LWT + retained status, TLS with a
client certificate when configured, paho's own reconnect with backoff. paho's callbacks only put
events on a queue; one worker thread owns the gallery store (a store is per thread, hence
`open_store`, a function that opens one) and does everything else:
- feeds new audit records (and enrollment uploads) into the durable outbox, publishes outbox rows
  in order, QoS 1, at most `window` messages ahead of the hub's acks, and goes back to the oldest
  unacknowledged row after a reconnect or `ack_timeout_s` without progress;
- verifies, opens and applies bundles (sync.bundle), acks them with the new gallery version, asks
  for a resync on a sequence gap, and audits every refused message;
- republishes the retained status on connect, on change and every `status_interval_s`.
`publish_event(decision)` is for live consumers (QoS 0, may be lost): the audit trail is the
durable record of a decision.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.audit.journal import AuditLog
from edge.audit.records import AuditRecord
from edge.config import Config
from edge.errors import AuditError, ConfigError, FacegateError
from edge.events import person_label
from edge.gallery.store import GalleryStore
from edge.identity import DeviceIdentity
from sync import protocol, status
from sync.apply import apply_bundle
from sync.broker import configure_client
from sync.bundle import open_bundle
from sync.control import DeviceControl
from sync.groupkeys import GroupKeyFile
from sync.hubkeys import HubKeyring
from sync.inbound import Inbound
from sync.keyfiles import hub_seal_key, hub_sign_key
from sync.outbox import AUDIT, Outbox, OutboxRow, leading_group
from sync.protocol import SequenceGapError
from sync.rejects import RejectLimiter
from sync.reports import DeviceReports
from sync.uploads import Upload, outbox_upload

_LOG = logging.getLogger(__name__)
_TICK_S = 0.05
LOG_EVERY = 1000  # after the first, one logged traceback per this many worker faults


class SyncAgent:
    def __init__(
        self,
        cfg: Config,
        open_store: Callable[[], GalleryStore],
        audit_log: AuditLog,
        on_gallery_update: Callable[[int], None] | None = None,
    ) -> None:
        if not cfg.sync.broker_host:
            raise ConfigError("sync.broker_host: empty, so sync is off; set it to run the sync agent")
        self.cfg, self.sync = cfg, cfg.sync
        self.device_id = protocol.check_id(cfg.sync.device_id)
        self._open_store, self._audit, self._on_gallery_update = open_store, audit_log, on_gallery_update
        data_dir = Path(audit_log.path).parent
        self._identity = DeviceIdentity.open(data_dir)
        # The hub signing keys this device trusts, by key id (sync.signing): every signed hub
        # message (bundles, acks, resend requests, key rotations) is checked against this mapping,
        # a persistent keyring (sync.hubkeys) seeded from hub_sign_key_file and changed by rotations.
        self._keyring = HubKeyring.open(data_dir, hub_sign_key(self.sync.hub_sign_key_file))
        self._hub_keys: Mapping[str, Ed25519PublicKey] = self._keyring
        self._group_keys = GroupKeyFile.open(data_dir)  # the group keys bundles were sealed under (sync.groupkeys)
        self._hub_seal = hub_seal_key(self.sync.hub_seal_key_file) if self.sync.hub_seal_key_file else None
        self._outbox = Outbox.open(data_dir)
        self._rejects = RejectLimiter(self._journal)  # a flood of forged messages is counted, not journalled one by one
        self._control = DeviceControl(self.device_id, self._outbox, audit_log, self._reject, audit=cfg.audit)  # signed acks, resends, prunes
        self._reports = DeviceReports(self.device_id, audit_log, cfg.match.keep_probes_h, cfg.match.keep_probes_max, self._reject, self._publish)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._inbound = Inbound(self.device_id, self.sync.max_bundle_mib * 1024 * 1024, self._events)
        self.errors = 0  # unexpected worker faults, contained (logged once per LOG_EVERY)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.time()
        self._models = status.model_versions(cfg)
        self._sent_upto = 0  # highest outbox row id published since the last go-back
        self._inflight: deque[int] = deque()  # last outbox row id of each message awaiting the hub's ack
        self._last_progress = time.monotonic()
        self._next_status = 0.0
        self._gallery: dict[str, Any] = {}
        self._doors: set[str] = set()
        self._ha_state: dict[str, Any] = {"last_decision": None, "last_person": None, "liveness": None, "doors": {}}
        self._client = self._make_client()

    # -- paho: configured once; its callbacks only queue events ----------------------------

    def _make_client(self) -> mqtt.Client:
        # manual_ack: a bundle is PUBACKed only once it is applied (or refused), so a device killed
        # mid-apply gets it again from its session after the restart.
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id, protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
        configure_client(client, self.sync, "sync")  # TLS, login; refuses a broker off this host in clear
        client.will_set(protocol.device_topic(self.device_id, protocol.STATUS), status.offline_message(self.device_id), qos=1, retain=True)
        client.reconnect_delay_set(self.sync.reconnect_min_s, self.sync.reconnect_max_s)
        client.max_inflight_messages_set(max(20, self.sync.window))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._inbound.on_message  # bounded before queued or parsed (sync.inbound)
        return client

    def _on_connect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:  # refused (bad certificate, not authorised…): stay disconnected, say why
            _LOG.warning("broker refused the connection: %s", reason)
            return
        self._events.put(("connected", None))

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        self._connected.clear()
        _LOG.info("disconnected from the broker: %s", reason)

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> SyncAgent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.sync.session_expiry_s
        # The broker drops for us what is far above every bound: what lies between is refused
        # here, and audited, so the operator learns of a hub that builds bundles too large.
        props.MaximumPacketSize = 2 * self.sync.max_bundle_mib * 1024 * 1024 + 64 * 1024
        self._client.connect_async(self.sync.broker_host, self.sync.broker_port, self.sync.keepalive_s, clean_start=False, properties=props)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="facegate-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._inbound.close()  # a network thread waiting for queue room lets go
        if self._thread is not None:
            self._thread.join(timeout)
        if self._connected.is_set():
            info = self._client.publish(protocol.device_topic(self.device_id, protocol.STATUS), status.offline_message(self.device_id), qos=1, retain=True)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self._thread is None or not self._thread.is_alive():  # a worker still applying a bundle keeps it
            self._outbox.close()

    def queue_depth(self) -> int:
        return self._outbox.depth() + max(0, self._audit.last_seq() - self._outbox.audit_cursor())

    def publish_event(self, decision: dict[str, Any], kind: str = "event") -> None:
        """A decision (`kind` "event") or a step-up `challenge` for live consumers, and decisions
        for Home Assistant: QoS 0, dropped while offline."""
        if not self._connected.is_set():
            return
        self._client.publish(protocol.device_topic(self.device_id, protocol.EVENTS), protocol.encode({"v": protocol.VERSION, "type": kind, **decision}), qos=0)
        if self.sync.homeassistant and kind == "event":
            self._events.put(("ha_event", decision))

    # -- the worker ------------------------------------------------------------------------

    def _run(self) -> None:
        store = self._open_store()
        try:
            self._gallery = self._gallery_status(store)
            while not self._stop.is_set():
                try:
                    self._tick(store)
                except Exception:  # noqa: BLE001 - sync must outlive any one fault: the next tick retries
                    self.errors += 1
                    if self.errors == 1 or self.errors % LOG_EVERY == 0:
                        _LOG.exception("sync worker fault (%d so far); it goes on", self.errors)
                    self._stop.wait(1.0)
        finally:
            self._rejects.flush(force=True)
            store.close()

    def _tick(self, store: GalleryStore) -> None:
        self._drain(store)
        try:
            self._feed(store)
            self._send()
        except FacegateError as exc:  # a full disk, a locked file: keep the agent alive, retry next tick
            _LOG.error("sync outbox: %s", exc)
        if self._connected.is_set() and time.monotonic() >= self._next_status:
            self._publish_status()
        self._rejects.flush()

    def _drain(self, store: GalleryStore) -> None:
        try:
            kind, value = self._events.get(timeout=_TICK_S)
        except queue.Empty:
            return
        while True:
            if kind == "connected":
                self._on_connected()
            elif kind == "message":
                topic, payload, mid, qos = value
                try:
                    self._route(store, topic, payload)
                except Exception:  # noqa: BLE001 - one bad message must not stop the agent
                    _LOG.exception("unexpected error handling a message on %s", topic)
                finally:
                    self._inbound.taken(payload)
                if qos > 0:
                    self._client.ack(mid, qos)
            elif kind == "oversize":
                self._refused(value.topic, value.size, value.sha256, value.error)
                if value.topic.endswith("/" + protocol.GALLERY):  # nacked like any refused bundle; its seq is unread
                    self._gallery_ack(protocol.scope_of_topic(value.topic), 0, False, str(value.error))
                if value.qos > 0:
                    self._client.ack(value.mid, value.qos)
            elif kind == "ha_event":
                self._ha_update(value)
            try:
                kind, value = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_connected(self) -> None:
        topics = [protocol.device_topic(self.device_id, leaf) for leaf in (protocol.GALLERY, protocol.ACK, protocol.RESEND, protocol.REPORT)]
        topics += [protocol.group_gallery_topic(g) for g in self.sync.groups]
        topics.append(protocol.HUB_KEYS_FILTER)  # retained hub key rotations (sync.hubkeys)
        result, _mid = self._client.subscribe([(t, 1) for t in topics])
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            _LOG.warning("subscribe failed: %s", result)
            return
        self._connected.set()
        self._sent_upto, self._inflight = 0, deque()  # resend whatever the hub has not acked
        self._last_progress = time.monotonic()
        self._publish_status()
        if self.sync.homeassistant:
            for topic, payload in status.ha_discovery(self.sync.homeassistant_prefix, self.device_id, sorted(self._doors)):
                self._client.publish(topic, payload, qos=1, retain=True)
            self._ha_publish()

    def _route(self, store: GalleryStore, topic: str, payload: bytes) -> None:
        if topic == protocol.device_topic(self.device_id, protocol.ACK):
            # Signed, for this device, nothing above what was fed (sync.control); else refused and audited.
            if self._control.ack(topic, payload, self._hub_keys):
                self._last_progress = time.monotonic()
            return
        if topic == protocol.device_topic(self.device_id, protocol.RESEND):
            if self._control.resend(topic, payload, self._hub_keys):
                self._sent_upto, self._inflight = 0, deque()  # publish again from the oldest row: the re-fed records
            return
        if topic == protocol.device_topic(self.device_id, protocol.REPORT):  # "not this person" (sync.reports): signed, once
            self._reports.handle(store, topic, payload, self._hub_keys)
            return
        if topic.startswith(protocol.HUB_KEYS_TOPIC + "/"):
            self._key_rotation(topic, payload)
            return
        self._bundle(store, topic, payload)

    def _key_rotation(self, topic: str, payload: bytes) -> None:
        try:
            rotations = self._keyring.receive(payload, f"key rotation on {topic}")
        except FacegateError as exc:  # ProtocolError: forged, unknown signer, revoked key; ConfigError: keyring not writable
            self._reject(topic, payload, exc)
            return
        for rotation in rotations:
            _LOG.warning("hub signing key %s trusted (signed by %s); revoked: %s", rotation.new_key_id, rotation.signed_by, ", ".join(rotation.revoked) or "-")
            self._journal("key", rotation.audit_body())

    def _bundle(self, store: GalleryStore, topic: str, payload: bytes) -> None:
        scope, seq = "unknown", 0
        try:
            scope = protocol.scope_of_topic(topic)
            # By scope: a catch-up on this device's own topic is a bundle of one of its groups.
            content = open_bundle(payload, topic, self._hub_keys, self.device_id, self._identity.sealing_key, self._group_keys, store.sync_state().scopes)
            scope, seq = content.scope, content.seq
            applied = apply_bundle(store, content, self.sync.max_bundle_ahead_s)
            version = applied.version
        except SequenceGapError as exc:
            self._reject(topic, payload, exc)
            self._publish(protocol.RESYNC, {"type": "resync", "scope": exc.scope, "have_seq": exc.have})
            self._gallery_ack(scope, seq, False, str(exc))
            return
        except FacegateError as exc:  # ProtocolError: refused; GalleryError: could not apply (nothing changed)
            self._reject(topic, payload, exc)
            self._gallery_ack(scope, seq, False, str(exc))
            return
        self._journal("gallery_update", {
            "scope": scope, "seq": content.seq, "kind": content.kind, "gallery_version": version, "upserts": len(content.upserts),
            "removes": len(content.removes), "erases": len(content.erases), "dropped_erased": len(applied.dropped_erased)})
        self._gallery = self._gallery_status(store)
        self._gallery_ack(scope, content.seq, True, "")
        self._next_status = 0.0
        if self._on_gallery_update is not None:
            self._on_gallery_update(version)

    def _journal(self, kind: str, body: dict[str, Any]) -> None:
        """A full disk must not keep an applied bundle (a revocation) from the running daemon, nor a
        refusal from its nack: logged, and the journal's health raises the alarm (edge/audit/health.py)."""
        try:
            self._audit.append(kind, body)
        except AuditError as exc:
            _LOG.error("sync: %s record not audited: %s", kind, exc)

    def _reject(self, topic: str, payload: bytes, exc: Exception) -> None:
        self._refused(topic, len(payload), hashlib.sha256(payload).hexdigest(), exc)

    def _refused(self, topic: str, size: int, digest: str, exc: Exception) -> None:
        body = {"topic": topic, "error": type(exc).__name__, "reason": str(exc)[:500], "bytes": size, "sha256": digest}
        if self._rejects.record(topic, type(exc).__name__, body):
            _LOG.warning("refused message on %s: %s", topic, exc)

    def _gallery_ack(self, scope: str, seq: int, ok: bool, error: str) -> None:
        self._publish(protocol.GALLERY_ACK, {"type": "gallery_ack", "scope": scope, "seq": seq, "ok": ok, "gallery_version": self._gallery.get("version", 0), "error": error[:1000]})

    def _publish(self, leaf: str, message: dict[str, Any]) -> None:
        payload = protocol.encode({"v": protocol.VERSION, "device": self.device_id, **message})
        self._client.publish(protocol.device_topic(self.device_id, leaf), payload, qos=1)

    def _gallery_status(self, store: GalleryStore) -> dict[str, Any]:
        state = store.sync_state()
        return {"version": state.version, "scopes": state.scopes, "persons": store.status()["persons"]}

    def _publish_status(self) -> None:
        payload = status.status_message(self.device_id, True, self._started, self._models, self._gallery, self.queue_depth())
        self._client.publish(protocol.device_topic(self.device_id, protocol.STATUS), payload, qos=1, retain=True)
        self._next_status = time.monotonic() + self.sync.status_interval_s
        if self.sync.homeassistant:
            self._ha_publish()

    # -- outbox ----------------------------------------------------------------------------

    def _feed(self, store: GalleryStore) -> None:
        def upload(record: AuditRecord) -> Upload | None:  # an enrollment upload or a kiosk withdrawal after its record
            return outbox_upload(store, self.device_id, record, self._hub_seal, self._identity.signing_key)

        while self._outbox.feed_audit(self._audit, upload) and not self._stop.is_set():
            pass

    def _send(self) -> None:
        if not self._connected.is_set():
            return
        first = self._outbox.first_id()
        while self._inflight and (first is None or self._inflight[0] < first):
            self._inflight.popleft()
        if self._inflight and time.monotonic() - self._last_progress > self.sync.ack_timeout_s:
            _LOG.info("no ack from the hub for %.0f s: resending from the oldest unacknowledged record", self.sync.ack_timeout_s)
            self._sent_upto, self._inflight = 0, deque()
        while first is not None and len(self._inflight) < self.sync.window:
            rows = self._outbox.pending(self._sent_upto, self.sync.batch)
            if not rows:
                return
            group = leading_group(rows)
            topic, payload = self._message(group)
            if not self._inflight:
                self._last_progress = time.monotonic()
            info = self._client.publish(topic, payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._connected.clear()
                return
            self._sent_upto = group[-1].id
            self._inflight.append(group[-1].id)

    def _message(self, group: list[OutboxRow]) -> tuple[str, bytes]:
        if group[0].kind == AUDIT:
            head = f'{{"v":{protocol.VERSION},"type":"audit","device":"{self.device_id}","records":['
            return protocol.device_topic(self.device_id, protocol.AUDIT), (head + ",".join(r.body for r in group) + "]}").encode()
        return protocol.device_topic(self.device_id, protocol.ENROLL), group[0].body.encode()

    # -- Home Assistant ----------------------------------------------------------------------

    def _ha_update(self, decision: dict[str, Any]) -> None:
        """`decision` is a DecisionEvent's body (edge/events.py)."""
        self._ha_state["last_decision"] = decision.get("decision")
        # Retained on the broker, beyond erasure: the name only if the body carries it ([privacy] show_names).
        self._ha_state["last_person"] = person_label(decision)
        live = decision.get("liveness")
        self._ha_state["liveness"] = None if not isinstance(live, dict) else ("live" if live.get("live") else "spoof")
        door = decision.get("door")
        if isinstance(door, str) and protocol.check_id(door, "door"):
            self._ha_state["doors"][door] = self._ha_state["last_decision"]
            if door not in self._doors:
                self._doors.add(door)
                for topic, payload in status.ha_discovery(self.sync.homeassistant_prefix, self.device_id, [door])[-1:]:
                    self._client.publish(topic, payload, qos=1, retain=True)
        self._ha_publish()

    def _ha_publish(self) -> None:
        state = {**self._ha_state, "gallery_version": self._gallery.get("version", 0), "queue": self.queue_depth()}
        self._client.publish(protocol.device_topic(self.device_id, status.HA_STATE), protocol.encode(state), qos=0, retain=True)

