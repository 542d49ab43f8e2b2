"""What the device's agent takes from the broker before anything is parsed: a size bound per
topic, and a bound on the bytes waiting for the worker.

paho's network thread hands every message to `Inbound.on_message`. A payload above its topic's
bound (`sync.protocol.DEVICE_MAX_BYTES`, bundles `[sync] max_bundle_mib`) is dropped there; only
its size and hash go on, to be refused and audited (`rejected_message`, PayloadTooLargeError) by
the worker. A payload within bounds is queued for the worker — but no more than `max_queued`
bytes wait at once: past that, the network thread waits until the worker has taken enough. So a
flood of large messages (anyone may publish on a plaintext broker) costs at most one bound's
worth of queue plus the message being read, never memory without end; while it waits, paho
reads nothing more and TCP holds the rest at the broker, which keeps it for the session.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from sync import protocol

WAIT_S = 0.5  # how often a waiting network thread looks whether the agent is stopping


@dataclass(frozen=True, slots=True)
class Oversize:
    """A message refused for its size: what the audit record says of it."""

    topic: str
    size: int
    sha256: str
    error: protocol.PayloadTooLargeError
    mid: int
    qos: int


class Inbound:
    def __init__(self, device_id: str, max_bundle_bytes: int, events: queue.Queue[tuple[str, Any]]) -> None:
        self._device_prefix = protocol.device_topic(device_id, "")
        self.max_bundle_bytes = max_bundle_bytes
        self.max_queued = max_bundle_bytes  # bytes of payload waiting for the worker, at most
        self._events = events
        self._queued = 0
        self.peak_queued = 0  # the most bytes that ever waited (tests, and a look in a debugger)
        self._room = threading.Condition()
        self._closed = False

    def bound(self, topic: str) -> int:
        """The most bytes this device takes on `topic`."""
        if topic.startswith(protocol.HUB_KEYS_TOPIC + "/"):
            return protocol.DEVICE_MAX_BYTES[protocol.HUB_KEYS_TOPIC]
        return protocol.DEVICE_MAX_BYTES.get(topic.removeprefix(self._device_prefix), self.max_bundle_bytes)

    def on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload, bound = bytes(msg.payload), self.bound(msg.topic)
        if len(payload) > bound:
            error = protocol.PayloadTooLargeError(f"{len(payload)} bytes, above the {bound}-byte bound for this topic")
            self._events.put(("oversize", Oversize(msg.topic, len(payload), hashlib.sha256(payload).hexdigest(), error, msg.mid, msg.qos)))
            return
        with self._room:
            # One message is always let through, however large (it is within its bound).
            while self._queued and self._queued + len(payload) > self.max_queued and not self._closed:
                self._room.wait(WAIT_S)
            if self._closed:  # stopping: not acked, so the broker sends it again next session
                return
            self._queued += len(payload)
            self.peak_queued = max(self.peak_queued, self._queued)
        self._events.put(("message", (msg.topic, payload, msg.mid, msg.qos)))

    def taken(self, payload: bytes) -> None:
        """The worker is done with a queued payload: its bytes make room."""
        with self._room:
            self._queued -= len(payload)
            self._room.notify_all()

    def close(self) -> None:
        with self._room:
            self._closed = True
            self._room.notify_all()
