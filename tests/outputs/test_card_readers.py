"""Card readers feeding a door's credentials: Wiegand pulses on GPIO inputs (the in-memory chip,
driven at a real reader's timing: 50 us pulses, 2 ms apart) and an OSDP reader — a libosdp PD
over a pty — sending card reads and key presses to the daemon's Control Panel."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import tty
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import osdp
import pytest
import zmq

from bench.harness.fake_gpio import FakeChip, FakeLines
from edge.access.credentials import CARD, PIN, Credentials, DoorCredentials, Presented, card_id
from edge.audit.journal import AuditLog
from edge.config import CameraConfig, Config, DoorConfig, MetricsConfig
from edge.daemon import Daemon, RunOptions
from edge.gallery.enroll import enroll_photos
from edge.gallery.loader import open_gallery
from edge.gallery.records import PersonProfile
from edge.outputs.card_readers import WiegandDecoder, WiegandError, WiegandReader, card_of
from edge.outputs.doors import DoorOutputs
from edge.outputs.osdp import FdChannel, OsdpPanel, pack_bits
from edge.outputs.wiegand import INTERVAL_US, PULSE_US, WiegandOut, frame
from edge.perception.faces import Perception
from tests.support.faces import DEMO_GALLERY
from tests.support.waiting import wait_for

D0, D1, RELAY = 6, 7, 17
ADDRESS = 101


class Wire:
    """The reader's side of the cable: what a WiegandOut sets, the door's inputs see."""

    def __init__(self, inputs: FakeLines) -> None:
        self.inputs = inputs

    def set(self, line: int, active: bool) -> None:
        self.inputs.drive_input(line, active)

    def get(self, line: int) -> bool:
        return self.inputs.values[line]

    def close(self) -> None:
        """Nothing to release."""


def pulse_bits(wire: Wire, bits: list[int]) -> None:
    """Any bits (garbage too) at WiegandOut's timing."""
    start = time.perf_counter_ns()
    for i, bit in enumerate(bits):
        line = D1 if bit else D0
        while time.perf_counter_ns() < start + i * INTERVAL_US * 1000:
            pass
        wire.set(line, True)
        while time.perf_counter_ns() < start + (i * INTERVAL_US + PULSE_US) * 1000:
            pass
        wire.set(line, False)


def door(**kw: object) -> DoorConfig:
    return DoorConfig(**{"name": "front", "camera": "cam0", "mode": "card_and_face", "wiegand_in_d0": D0, "wiegand_in_d1": D1, **kw})


def next_reads(creds: DoorCredentials, n: int, timeout: float = 5.0) -> list[Presented]:
    got: list[Presented] = []
    assert wait_for(lambda: bool(got.extend(creds.take_new(time.monotonic())) or len(got) >= n), timeout), got
    return got


def test_wiegand_pulses_on_the_inputs_become_card_reads() -> None:
    lines = FakeChip()("/dev/gpiochip1", {}, {D0: True, D1: True})
    creds = DoorCredentials(door())
    reader = WiegandReader("front", lines, D0, D1, creds).start()
    try:
        WiegandOut(Wire(lines), D0, D1, bits=26, facility=173).send(48213)
        [read] = next_reads(creds, 1)
        assert (read.kind, read.value) == (CARD, card_id(173, 48213))
        time.sleep(0.05)  # the gap between two cards
        WiegandOut(Wire(lines), D0, D1, bits=34, facility=0xBEEF).send(4242)
        [read] = next_reads(creds, 1)
        assert read.value == card_id(0xBEEF, 4242)
        assert reader.cards == 2 and not reader.errors
    finally:
        reader.close()
    assert lines.closed


def test_parity_errors_and_27_bit_garbage_are_refused_and_the_reader_keeps_reading() -> None:
    lines = FakeChip()("/dev/gpiochip1", {}, {D0: True, D1: True})
    creds = DoorCredentials(door())
    reader = WiegandReader("front", lines, D0, D1, creds).start()
    wire = Wire(lines)
    try:
        flipped = frame(48213, 173)
        flipped[9] ^= 1
        pulse_bits(wire, flipped)
        time.sleep(0.06)
        pulse_bits(wire, [1, 0, 1] * 9)  # 27 bits
        time.sleep(0.06)
        assert wait_for(lambda: sum(reader.errors.values()) == 2, 5.0)
        assert reader.errors == {"parity": 1, "bit_count": 1}
        assert creds.take_new(time.monotonic()) == []
        pulse_bits(wire, frame(48213, 173))
        [read] = next_reads(creds, 1)
        assert read.value == card_id(173, 48213) and reader.thread.is_alive()
    finally:
        reader.close()


def test_frames_split_at_the_gap_and_bad_frames_raise_a_typed_error() -> None:
    decoder = WiegandDecoder(D0, D1, gap_s=0.025)
    bits = frame(1, 2)
    frames = []
    for i, bit in enumerate(bits * 2):  # two frames, 2 ms between bits, 40 ms between frames
        frames += decoder.pulse(i * 2_000_000 + (40_000_000 if i >= len(bits) else 0), D1 if bit else D0)
    frames += decoder.flush(10**12)
    assert frames == [bits, bits]
    for bad, kind in [([0] * 25, "bit_count"), (bits[:-1] + [1 - bits[-1]], "parity")]:
        with pytest.raises(WiegandError) as caught:
            card_of(bad)
        assert caught.value.kind == kind


def _pty() -> tuple[int, int]:
    a, b = os.openpty()
    tty.setraw(a)
    tty.setraw(b)
    return a, b


def test_an_osdp_reader_sends_card_reads_and_pin_keys_to_the_control_panel() -> None:
    cp_end, pd_end = _pty()
    key = bytes(range(16))
    caps = osdp.PDCapabilities([(osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.OutputControl, 1, 1),
                                (osdp.Capability.LEDControl, 1, 1)])
    pd = osdp.PeripheralDevice(osdp.PDInfo(ADDRESS, FdChannel(pd_end), scbk=key, flags=[osdp.LibFlag.EnforceSecure]),
                               caps, log_level=osdp.LogLevel.Warning)
    pd.start()
    front = door(mode="pin_and_face", wiegand_in_d0=-1, wiegand_in_d1=-1, osdp="cp", osdp_port="pty", osdp_address=ADDRESS)
    cfg = Config(door=(front,))
    ctx = zmq.Context()
    outputs = DoorOutputs(cfg, ctx, osdp_opener=lambda d: OsdpPanel(cp_end, d.osdp_address, key, d.osdp_output))
    credentials = Credentials(cfg.door)
    outputs.on_start(SimpleNamespace(states={"cam0": None}, credentials=credentials, cfg=cfg))
    creds = credentials.get("front")
    try:
        assert wait_for(lambda: outputs.doors["cam0"].osdp.online, 10.0)
        card = {"event": osdp.Event.CardRead, "reader_no": 0, "format": osdp.CardFormat.Wiegand, "direction": 0, "length": 26}
        assert pd.submit_event({**card, "data": pack_bits(frame(48213, 173))})
        assert pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0, "data": b"48"})
        assert pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0, "data": b"2190\r"})
        bad = frame(48213, 173)
        bad[3] ^= 1
        assert pd.submit_event({**card, "data": pack_bits(bad)})
        reads = next_reads(creds, 2, 10.0)
        assert [(r.kind, r.value) for r in reads] == [(CARD, card_id(173, 48213)), (PIN, "482190")]
        assert wait_for(lambda: outputs.doors["cam0"].card_errors["parity"] == 1, 10.0)
    finally:
        outputs.close()
        pd.stop()
        ctx.term()
        os.close(cp_end)
        os.close(pd_end)


def test_a_card_alone_opens_a_card_or_face_door_through_the_running_daemon(perception: Perception, tmp_path: Path) -> None:
    folder = tmp_path / "empty-hall"
    folder.mkdir()
    for i in range(40):  # 4 s of an empty scene at 10 fps: no face, only the card
        cv2.imwrite(str(folder / f"{i:04d}.jpg"), np.full((240, 320, 3), 90, np.uint8))
    front = door(mode="card_or_face", relay_line=RELAY, liveness_required=False)
    cfg = dataclasses.replace(perception.cfg, door=(front,), metrics=MetricsConfig(enabled=False))
    data_dir = tmp_path / "g"
    with open_gallery(data_dir, cfg, perception.store, create=True) as gallery:
        record, _ = enroll_photos(gallery, perception, PersonProfile("Barack Obama", cards=(card_id(173, 48213),)),
                                  [DEMO_GALLERY / "Barack_Obama/obama.jpg"])
    assert record is not None
    outputs, readers = FakeChip(), FakeChip()
    holder: dict[str, Daemon] = {}
    started = threading.Event()

    def run() -> None:
        options = RunOptions([CameraConfig(name="cam0", source=str(folder), fps=10.0)], data_dir, realtime=True, gpio=outputs,
                             card_edges=lambda chip, lines: readers(chip, {}, lines))
        daemon = holder["d"] = Daemon(cfg, options, perception).start()
        started.set()
        daemon.run(max_seconds=30)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    assert started.wait(60)
    try:
        assert wait_for(lambda: bool(readers.opened) and holder["d"].doors.doors["cam0"].reader is not None, 10.0)
        swiped = time.monotonic()
        WiegandOut(Wire(readers.opened[0]), D0, D1, facility=173).send(48213)
        opened = outputs.opened[0].wait_for(RELAY, True, 10.0)
        assert opened is not None and opened - swiped < 1.0
    finally:
        runner.join(30)
    with AuditLog.open(data_dir) as journal:
        decisions = [r.body for r in journal.since(0, 1000) if r.kind == "decision"]
    assert [(d["decision"], d["reason"], d["credential"], d["person_uid"]) for d in decisions] == [("grant", "card", "card", record.uid)]
    stored = b"".join(p.read_bytes() for p in data_dir.iterdir() if p.is_file())
    assert b"48213" not in stored and str(card_id(173, 48213)).encode() not in stored
