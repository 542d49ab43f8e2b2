"""A simulated fleet against a real mosquitto and the hub: bytes and time per change; one JSON object.

    .venv/bin/python bench/fleet.py [--devices 100] [--persons 5000] [--procs 4] [--changes 5] [--batch 100] [--erase 0]
                                    [--dim 512] [--backend auto|sqlite|postgresql] [--audit-rate 0] [--audit-s 30]
                                    [--hubs 1] [--loop select|threads]

- The hub: `HubService` (ingest, gallery acks, resyncs) in a process of its own (`--hubs K`: K
  processes in one MQTT shared-subscription group on one database, as `hub serve` instances
  scale out; the first makes the changes; CPU is summed over them), on PostgreSQL
  (`bench.harness.pg_server`, when installed; `--backend auto`) or SQLite; the changes are made
  in that process too (`HubStore.add_person`, then `Hub.bundles` + publish, as `admin push`
  does), so its CPU and peak RSS are the hub's whole cost.
- The devices: `--devices` paho clients over `--procs` processes (one network thread per process
  serving all its clients, `NetLoop`; `--loop threads` gives each client paho's own thread), each with its own X25519 key
  (registered on the hub, one group `staff`), persistent MQTT sessions. Each verifies, opens and
  applies every bundle it receives with the device's own code (`sync.bundle.open_bundle` with its
  kept group keys, `sync.bundle.check_sequence`: replays, gaps, epochs) into an in-memory gallery
  (`MemGallery`: full / incremental semantics and erase tombstones as `edge.gallery.sync_apply`),
  then publishes its `gallery_ack` to the hub; a gap is answered with a resync request.
- Bootstrap: the devices start from the hub's full bundle, which is written to a file rather than
  sent through the broker (at 1,000 devices and 50,000 persons that is ~140 GB of MQTT). Each
  process opens it once; each device unwraps its own group key from it and acks it through MQTT,
  so the hub knows every device is at that bundle. Its size is reported (`full_bundle_bytes`).
- Changes: `--changes` one-person changes (a new person each), then one change of `--batch`
  persons, then `--erase` one-person erasures (`HubStore.erase_person` of gallery persons 0, 1, …;
  each delta also carries the erase owed). Per change: the bundle kind and `bytes_per_device` (each device receives the message
  once), build time, and the time from the start of the push until each device had applied and
  acked it (p50 / p95 / max); afterwards the hub's stored acks are checked for every device.
- Audit (`--audit-rate R --audit-s S`, after the changes): every device streams R/N decision
  records/s for S s — a real hash chain signed by its Ed25519 key, one batch per device every
  0.2 s, QoS 1 — into the hub's ingest (chain and signature checks, stored once per (device, seq));
  it checks each signed ack, and sends every unacked batch again after 5 s without an ack (the
  agent's ack-timeout go-back; with several hubs a device's batches can be taken out of order and
  the later one refused as a gap until it comes again). Reports records sent and stored, devices whose stored rows are
  exactly 1..n (nothing lost or duplicated), ack latency per batch (p50 / p99 / max), hub CPU.
- `before_bytes_per_device_per_change`: what the previous hub sent for any change, measured on the
  same gallery before the changes: a full bundle with the content key wrapped to every device.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GROUP = "staff"


# -- the device side ---------------------------------------------------------------------------

class MemGallery:
    """A device's gallery in memory: one shared base (the bootstrap bundle) plus its own changes.
    The live count is kept as it changes: at 50,000 base persons, recounting with set
    arithmetic at every ack would cost the 1,000 simulated devices seconds per change."""

    def __init__(self, base: dict[str, Any], seq: int) -> None:
        self.base, self.seq = base, seq
        self.upserts: dict[str, Any] = {}
        self.gone: set[str] = set()
        self.erased: set[str] = set()  # tombstones: never brought back
        self.count = len(base)

    def _has(self, uid: str) -> bool:
        return uid in self.upserts or (uid in self.base and uid not in self.gone)

    def _drop(self, uid: str) -> None:
        self.count -= self._has(uid)
        self.gone.add(uid)
        self.upserts.pop(uid, None)

    def apply(self, content: Any) -> None:
        for uid in content.erases:
            self.erased.add(uid)
            self._drop(uid)
        if content.kind == "full":
            self.base, self.upserts, self.gone, self.count = {}, {}, set(), 0
        for uid in content.removes:
            self._drop(uid)
        for p in content.upserts:
            if p.uid not in self.erased:
                self.count += not self._has(p.uid)
                self.upserts[p.uid] = p
                self.gone.discard(p.uid)
        self.seq = content.seq

    def __len__(self) -> int:
        return self.count


class AuditStream:
    """One device's audit trail: a real hash chain signed by its Ed25519 key, sent in batches;
    the hub's signed acks (audit_upto) give each batch's ack latency."""

    def __init__(self, name: str, key: Any) -> None:
        self.name, self.key = name, key
        self.seq, self.prev = 0, "0" * 64
        self.sent: list[tuple[int, float, bytes]] = []  # (last seq of a batch, time first sent, payload), not yet acked
        self.resent = 0
        self.latencies: list[float] = []
        self.acked = 0
        self.lock = threading.Lock()

    def batch(self, n: int) -> bytes:
        from edge.audit.records import canonical_json, record_hash, sign_hash

        records = []
        for _ in range(n):
            self.seq += 1
            ts, body = time.time_ns() // 1000, {"camera": "front", "decision": "unknown", "score": 0.2, "i": self.seq}
            digest = record_hash(self.seq, ts, "decision", canonical_json(body), self.prev)
            records.append({"seq": self.seq, "ts_us": ts, "kind": "decision", "body": body, "prev": self.prev, "hash": digest, "sig": sign_hash(self.key, digest)})
            self.prev = digest
        payload = json.dumps({"v": 1, "type": "audit", "device": self.name, "records": records}).encode()
        with self.lock:
            self.sent.append((self.seq, time.time(), payload))
        return payload

    def overdue(self, after_s: float) -> list[bytes]:
        """Every unacked batch again once the oldest waited `after_s` (the agent's ack timeout go-back:
        with several hubs a device's batches can be taken out of order, the later one refused as a gap)."""
        with self.lock:
            if not self.sent or time.time() - self.sent[0][1] < after_s:
                return []
            self.resent += len(self.sent)
            self.sent = [(seq, time.time(), p) for seq, _t, p in self.sent]  # waits again; latency counts from the resend
            return [p for _s, _t, p in self.sent]

    def on_ack(self, upto: int) -> None:
        now = time.time()
        with self.lock:
            self.acked = max(self.acked, upto)
            while self.sent and self.sent[0][0] <= upto:
                self.latencies.append(now - self.sent.pop(0)[1])

    def resend(self, client: Any, topic: str, after_s: float) -> None:
        for payload in self.overdue(after_s):
            client.publish(topic, payload, qos=1)


RESEND_AFTER_S = 5.0  # the simulated agent's ack timeout


class NetLoop(threading.Thread):
    """One network thread for all the clients of a process, through paho's external-loop API.

    With a `loop_start()` thread per client, 250 threads per process contend for the GIL each
    time a bundle reaches them all at once; real devices each have a core of their own, so that
    contention is the simulation's cost, not the fleet's. Here the sockets sit in one epoll
    selector; publishes from other threads only queue (`on_socket_register_write`) and wake the
    loop, which alone reads and writes the sockets (paho's writes are not safe from two threads)."""

    def __init__(self) -> None:
        import selectors
        import socket

        super().__init__(daemon=True)
        self.sel = selectors.DefaultSelector()
        self.clients: list[Any] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.stopping = threading.Event()

    def add(self, client: Any) -> None:
        import selectors

        client.on_socket_register_write = lambda *_a: self._wake()
        self.sel.register(client.socket(), selectors.EVENT_READ, client)
        self.clients.append(client)

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except BlockingIOError:
            pass

    def run(self) -> None:
        last_misc = time.monotonic()
        while not self.stopping.is_set():
            for key, _ev in self.sel.select(0.05):
                if key.data is None:
                    try:
                        self.wake_r.recv(65536)
                    except BlockingIOError:
                        pass
                else:
                    key.data.loop_read(10)
            for c in self.clients:
                if c.want_write():
                    c.loop_write()
            if time.monotonic() - last_misc > 1.0:  # keepalives and QoS retries
                last_misc = time.monotonic()
                for c in self.clients:
                    c.loop_misc()

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def _audit_loop(clients: list[Any], streams: list[AuditStream], rate: float, seconds: float, tick: float = 0.2) -> None:
    """`rate` records/s per device for `seconds`, one batch per device per tick (what a device's outbox does)."""
    from sync import protocol

    owed, t0 = 0.0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        owed += rate * tick
        n = int(owed)
        owed -= n
        for c, st in zip(clients, streams, strict=True):
            if n:
                c.publish(protocol.device_topic(st.name, protocol.AUDIT), st.batch(n), qos=1)
            st.resend(c, protocol.device_topic(st.name, protocol.AUDIT), RESEND_AFTER_S)
        time.sleep(max(0.0, t0 + tick * (1 + int((time.monotonic() - t0) / tick)) - time.monotonic()))


def _device_proc(devices: list[tuple[str, bytes, bytes]], bootstrap: str, hub_pub: str, port: int, reports: Any, ready: Any, stop: Any, audit: Any,
                 threads: bool = False) -> None:
    import paho.mqtt.client as mqtt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from bench.harness.sync_helpers import KeptKeys
    from sync import protocol, sealing, signing
    from sync.bundle import check_sequence, epoch_aad, open_bundle
    from sync.protocol import SequenceGapError

    hub_key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(hub_pub))
    topic = protocol.group_gallery_topic(GROUP)
    payload = Path(bootstrap).read_bytes()
    message = json.loads(payload)
    first = X25519PrivateKey.from_private_bytes(devices[0][1])
    content = open_bundle(payload, topic, hub_key, devices[0][0], first)  # verified and opened once per process
    base = {p.uid: p for p in content.upserts}
    clients, streams = [], []
    net = NetLoop()
    for name, raw, sign_raw in devices:
        key = X25519PrivateKey.from_private_bytes(raw)
        stream = AuditStream(name, Ed25519PrivateKey.from_private_bytes(sign_raw))
        streams.append(stream)
        kept = KeptKeys()
        aad = epoch_aad(content.scope, message["epoch"])
        sealing.unwrap_key(key, name, message["eph"], message["recipients"], aad)  # its own wrap opens
        kept.put(content.scope, message["epoch"], message["eph"], message["recipients"][name])
        gallery = MemGallery(base, content.seq)
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        lock = threading.Lock()

        def ack(c: mqtt.Client, name: str, scope: str, seq: int, ok: bool, error: str, version: int) -> None:
            body = {"v": 1, "type": "gallery_ack", "device": name, "scope": scope, "seq": seq, "ok": ok, "gallery_version": version, "error": error[:500]}
            c.publish(protocol.device_topic(name, protocol.GALLERY_ACK), protocol.encode(body), qos=1)

        def on_message(c: mqtt.Client, _u: Any, msg: Any, name: str = name, key: Any = key, kept: KeptKeys = kept, g: MemGallery = gallery, lock: Any = lock,
                       stream: AuditStream = stream) -> None:
            data = bytes(msg.payload)
            if msg.topic.endswith("/" + protocol.ACK):  # the hub's signed audit ack, checked as the agent does
                hub_ack = json.loads(data)
                signing.verify(hub_ack, protocol.ACK_DOMAIN, {signing.key_id(hub_key): hub_key}, f"ack for {name}")
                if hub_ack.get("device") == name and "audit_upto" in hub_ack:
                    stream.on_ack(int(hub_ack["audit_upto"]))
                return
            with lock:
                try:
                    got = open_bundle(data, msg.topic, hub_key, name, key, kept)
                    check_sequence(got, g.seq)
                    g.apply(got)
                except SequenceGapError as exc:
                    c.publish(protocol.device_topic(name, protocol.RESYNC), protocol.encode(
                        {"v": 1, "type": "resync", "device": name, "scope": exc.scope, "have_seq": g.seq}), qos=1)
                    reports.put(("refused", name, 0, time.time(), len(data), type(exc).__name__))
                    return
                except Exception as exc:  # noqa: BLE001 - reported, the bench fails on it
                    reports.put(("refused", name, 0, time.time(), len(data), f"{type(exc).__name__}: {exc}"[:300]))
                    return
                ack(c, name, got.scope, got.seq, True, "", len(g))
                reports.put(("applied", name, got.seq, time.time(), len(data), got.kind, len(g)))

        client.on_message = on_message
        client.connect("127.0.0.1", port, 60, clean_start=True)
        client.subscribe([(topic, 1), (protocol.device_topic(name, protocol.ACK), 1)])
        if threads:  # --loop threads: paho's own thread per client (what this bench did before NetLoop)
            client.loop_start()
        else:
            net.add(client)
        ack(client, name, content.scope, content.seq, True, "", len(gallery))
        clients.append(client)
    if not threads:
        net.start()
    ready.put(len(clients))
    while not stop.is_set():
        try:
            rate, seconds = audit.get(timeout=0.5)
        except queue.Empty:
            continue
        if rate > 0:
            _audit_loop(clients, streams, rate, seconds)
            deadline = time.time() + 120
            while time.time() < deadline and any(st.acked < st.seq for st in streams):
                for c, st in zip(clients, streams, strict=True):
                    st.resend(c, protocol.device_topic(st.name, protocol.AUDIT), RESEND_AFTER_S)
                time.sleep(0.2)
        reports.put(("audit", [(st.name, st.seq, st.acked, st.resent) for st in streams], [x for st in streams for x in st.latencies]))
        break
    stop.wait()
    for c in clients:
        c.disconnect()
        if threads:
            c.loop_stop()
    time.sleep(0.5)  # the DISCONNECTs written by the loop
    if not threads:
        net.stop()


# -- the hub side ------------------------------------------------------------------------------

def _usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "max_rss_mib": r.ru_maxrss / 1024}


def _hub_proc(cfg: Any, dim: int, conn: Any) -> None:
    from bench.harness.sync_helpers import person
    from sync import protocol
    from sync.bundle import BundleContent, build_bundle
    from sync.hub.service import Hub, HubService

    hub = Hub(cfg)
    service = HubService(hub).start()
    service.connected.wait(30)
    conn.send("up")
    while True:
        if not conn.poll(1.0):
            service.tick()
            continue
        cmd, *args = conn.recv()
        if cmd in ("change", "erase"):  # add `n` persons from index `start` (or erase person `start`), then push
            n, start = args
            t0 = time.time()
            for i in range(start, start + n):
                if cmd == "erase":
                    hub.store.erase_person(person(i).uid)
                else:
                    hub.store.add_person(person(i, n_templates=1, dim=dim, groups=(GROUP,)))
            t1 = time.time()
            *catch_ups, out = hub.bundles(group=GROUP)  # catch-ups only for a device that never acked
            t2 = time.time()
            for each in (*catch_ups, out):
                service.client.publish(each.topic, each.payload, qos=1)
            conn.send({"t0": t1, "store_s": t1 - t0, "build_s": t2 - t1, "seq": out.seq, "kind": out.kind, "bytes": len(out.payload), "persons": out.persons})
        elif cmd == "acked":
            seq = args[0]
            conn.send(sum(1 for a in hub.store.gallery_acks() if a[2] == seq and a[3]))
        elif cmd == "audit_stored":  # per device: (rows, highest seq), and the alerts raised
            rows = hub.store.db.execute("SELECT device, count(*), max(seq) FROM audit GROUP BY device")
            conn.send(({r[0]: (int(r[1]), int(r[2])) for r in rows}, len(hub.store.alerts(100000)), service.refused))
        elif cmd == "usage":
            conn.send(_usage())
        elif cmd == "before":  # the previous hub's bundle for any change: everyone, content key wrapped per device
            from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
            recipients = {d.id: X25519PublicKey.from_public_bytes(bytes.fromhex(d.seal_pub)) for d in hub.store.devices()}
            persons = tuple(hub.store.persons((GROUP,)))
            content = BundleContent(f"group:{GROUP}", "full", 1, None, int(time.time()), persons)
            conn.send(len(build_bundle(content, hub.identity.signing_key, recipients)))
        elif cmd == "stop":
            service.stop()
            hub.close()
            conn.send(protocol.VERSION)
            return


# -- the run -----------------------------------------------------------------------------------

def _setup(root: Path, url: str, port: int, devices: int, persons: int, dim: int) -> tuple[Any, list[tuple[str, bytes, bytes]], str, Path]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    from bench.harness.sync_helpers import person
    from edge.config import HubConfig
    from edge.identity import raw_public
    from sync.hub.service import Hub

    tag = f"fleet-{time.monotonic_ns()}"
    cfg = HubConfig(data_dir=str(root / "hub"), database=url, broker_port=port, client_id=tag, share_group=tag)
    hub = Hub(cfg)
    keys = []
    for i in range(devices):
        x, ed = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        name = f"dev-{i:05d}"
        hub.store.add_device(name, raw_public(ed.public_key()).hex(), raw_public(x.public_key()).hex(), (GROUP,))
        keys.append((name, x.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()), ed.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())))
    for i in range(persons):
        hub.store.add_person(person(i, n_templates=1, dim=dim, groups=(GROUP,)))
    [full] = hub.bundles(group=GROUP)
    path = root / "bootstrap.bundle"
    path.write_bytes(full.payload)
    hub_pub = raw_public(hub.identity.signing_key.public_key()).hex()
    hub.close()
    return cfg, keys, hub_pub, path


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def _wait_change(reports: Any, info: dict[str, Any], devices: int, timeout: float) -> dict[str, Any]:
    lat: dict[str, float] = {}
    refused: dict[str, str] = {}
    deadline = time.time() + timeout
    while len(lat) < devices and time.time() < deadline:
        try:
            r = reports.get(timeout=1.0)
        except Exception:  # noqa: BLE001 - queue.Empty: look at the deadline again
            continue
        if r[0] == "applied" and r[2] == info["seq"]:
            lat[r[1]] = r[3] - info["t0"]
        elif r[0] == "refused":
            refused[r[1]] = r[5]
    out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items() if k != "t0"}
    out.update({"bytes_per_device": info["bytes"], "devices_applied": len(lat), "refused": len(refused), "refusals": sorted(set(refused.values()))[:3]})
    if lat:
        v = list(lat.values())
        out.update({"ack_p50_s": round(_percentile(v, 0.5), 3), "ack_p95_s": round(_percentile(v, 0.95), 3), "ack_max_s": round(max(v), 3)})
    return out


class Hubs:
    """`n` hub processes sharing the devices' messages (one MQTT shared-subscription group, one
    database); the first also makes the changes and answers the queries."""

    def __init__(self, ctx: Any, cfg: Any, dim: int, n: int) -> None:
        import dataclasses

        self.procs, self.conns = [], []
        for i in range(n):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_hub_proc, args=(dataclasses.replace(cfg, client_id=f"{cfg.client_id}-{i}"), dim, theirs))
            proc.start()
            self.procs.append(proc)
            self.conns.append(mine)
        for conn in self.conns:
            assert conn.recv() == "up"

    def send(self, message: tuple[Any, ...]) -> None:
        self.conns[0].send(message)

    def recv(self) -> Any:
        return self.conns[0].recv()

    def usage(self) -> dict[str, float]:
        """CPU summed over the hub processes; peak RSS of the largest."""
        got = []
        for conn in self.conns:
            conn.send(("usage",))
            got.append(conn.recv())
        return {"cpu_s": sum(u["cpu_s"] for u in got), "max_rss_mib": max(u["max_rss_mib"] for u in got)}

    def stop(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            if proc.is_alive():
                conn.send(("stop",))
                if conn.poll(60):
                    conn.recv()
            proc.join(30)
            if proc.is_alive():
                proc.terminate()


def _run(args: argparse.Namespace, root: Path, url: str, port: int, result: dict[str, Any]) -> None:
    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    cfg, keys, hub_pub, bootstrap = _setup(root, url, port, args.devices, args.persons, args.dim)
    result["setup_s"] = round(time.perf_counter() - t0, 1)
    result["full_bundle_bytes"] = bootstrap.stat().st_size
    parent = Hubs(ctx, cfg, args.dim, args.hubs)
    reports, ready, stop, audit = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Queue()
    shards = [keys[i :: args.procs] for i in range(args.procs)]
    procs = [ctx.Process(target=_device_proc, args=(s, str(bootstrap), hub_pub, port, reports, ready, stop, audit, args.loop == "threads")) for s in shards if s]
    for p in procs:
        p.start()
    try:
        _measure(args, parent, procs, reports, ready, audit, bootstrap, result)
    finally:  # a failed run must not leave simulated devices or the hub behind
        stop.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
        parent.stop()


def _measure(args: argparse.Namespace, parent: Hubs, procs: list[Any], reports: Any, ready: Any, audit: Any, bootstrap: Path, result: dict[str, Any]) -> None:
    assert sum(ready.get(timeout=600) for _ in procs) == args.devices
    deadline, boot_seq = time.time() + 300, _bundle_seq(bootstrap)
    while time.time() < deadline:  # every device's bootstrap ack stored by the hub: none is new
        parent.send(("acked", boot_seq))
        if parent.recv() == args.devices:
            break
        time.sleep(1.0)
    parent.send(("before",))  # on the gallery as it is before the changes
    result["before_bytes_per_device_per_change"] = parent.recv()
    base_usage = parent.usage()
    changes, start = [], args.persons
    for i in range(args.changes + 1):
        n = 1 if i < args.changes else args.batch
        parent.send(("change", n, start))
        start += n
        info = parent.recv()
        change = _wait_change(reports, info, args.devices, args.timeout)
        time.sleep(0.5)
        parent.send(("acked", info["seq"]))
        change["hub_stored_acks"] = parent.recv()
        changes.append(change)
    for i in range(args.erase):  # one-person erasures of gallery persons 0, 1, …: a ratchet step each (sync.ratchet)
        parent.send(("erase", 1, i))
        info = parent.recv()
        change = _wait_change(reports, info, args.devices, args.timeout)
        time.sleep(0.5)
        parent.send(("acked", info["seq"]))
        change["hub_stored_acks"] = parent.recv()
        changes.append(dict(change, erase=True))
    usage = parent.usage()
    result["changes"] = changes
    result["after_bytes_per_device_per_change"] = max(c["bytes_per_device"] for c in changes[: args.changes])
    result["hub_cpu_s_during_changes"] = round(usage["cpu_s"] - base_usage["cpu_s"], 2)
    result["hub_max_rss_mib"] = round(usage["max_rss_mib"], 1)
    for _ in procs:
        audit.put((args.audit_rate / args.devices, args.audit_s))
    if args.audit_rate > 0:
        result["audit"] = _audit_phase(args, parent, reports, len(procs), usage)


def _audit_phase(args: argparse.Namespace, parent: Hubs, reports: Any, procs: int, usage: dict[str, float]) -> dict[str, Any]:
    """`--audit-rate` records/s over the fleet for `--audit-s`: every one stored once, acked, how fast."""
    t0 = time.time()
    sent: dict[str, int] = {}
    acked: dict[str, int] = {}
    lat: list[float] = []
    got = resent = 0
    while got < procs and time.time() < t0 + args.audit_s + 300:
        try:
            r = reports.get(timeout=1.0)
        except queue.Empty:
            continue
        if r[0] == "audit":
            got += 1
            sent.update({name: seq for name, seq, _a, _r in r[1]})
            acked.update({name: a for name, _s, a, _r in r[1]})
            resent += sum(x for *_n, x in r[1])
            lat += r[2]
    elapsed = time.time() - t0
    parent.send(("audit_stored",))
    stored, alerts, refused = parent.recv()
    after = parent.usage()
    total = sum(sent.values())
    exact = sum(1 for d, n in sent.items() if stored.get(d) == (n, n))
    return {"rate_asked_per_s": args.audit_rate, "seconds": args.audit_s, "records_sent": total, "records_stored": sum(c for c, _m in stored.values()),
            "devices_stored_exactly": exact, "devices_fully_acked": sum(1 for d, n in sent.items() if acked.get(d) == n),
            "achieved_per_s": round(total / args.audit_s, 1), "batches_acked": len(lat), "batches_resent": resent, "elapsed_s": round(elapsed, 1),
            "ack_p50_s": round(_percentile(lat, 0.5), 3) if lat else None, "ack_p99_s": round(_percentile(lat, 0.99), 3) if lat else None,
            "ack_max_s": round(max(lat), 3) if lat else None, "hub_alerts": alerts, "hub_refused": refused,
            "hub_cpu_s": round(after["cpu_s"] - usage["cpu_s"], 2), "hub_max_rss_mib": round(after["max_rss_mib"], 1)}


def _bundle_seq(path: Path) -> int:
    return int(json.loads(path.read_bytes())["seq"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--persons", type=int, default=5000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--erase", type=int, default=0, help="one-person erasures after the changes")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--backend", choices=("auto", "sqlite", "postgresql"), default="auto")
    ap.add_argument("--hubs", type=int, default=1, help="hub serve processes sharing the work (MQTT shared subscription, one database)")
    ap.add_argument("--audit-rate", type=float, default=0.0, help="audit records/s over the whole fleet after the changes (0: none)")
    ap.add_argument("--audit-s", type=float, default=30.0)
    ap.add_argument("--loop", choices=("select", "threads"), default="select",
                    help="device network loop: one epoll thread per process (NetLoop), or paho's thread per client")
    args = ap.parse_args()

    import psycopg

    from bench.harness.mqtt_broker import Broker
    from bench.harness.pg_server import PgServer

    result: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(), "devices": args.devices, "persons": args.persons, "hubs": args.hubs,
                              "procs": args.procs, "dim": args.dim, "templates_per_person": 1, "loop": args.loop}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pg = PgServer.find() if args.backend != "sqlite" else None
        if args.backend == "postgresql" and pg is None:
            raise SystemExit("PostgreSQL not installed")
        with Broker(root / "broker") as broker:
            if pg is None:
                result["backend"] = "sqlite"
                _run(args, root, "", broker.port, result)
            else:
                with pg:
                    with psycopg.connect(pg.url, autocommit=True) as conn:
                        conn.execute("CREATE DATABASE fleet")
                    result["backend"] = "postgresql"
                    _run(args, root, pg.url.rsplit("/", 1)[0] + "/fleet", broker.port, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
