"""OSDP through libosdp over a pseudo-terminal pair: the daemon as PD (a grant is a card read
at the panel) and as CP (a grant switches the PD's output on), with and without secure channel."""

from __future__ import annotations

import os
import tty

import osdp
import pytest

from edge.outputs.osdp import OUTPUT_TEMPORARY_ON, FdChannel, OsdpPanel, OsdpReader, pack_bits, unpack_bits
from edge.outputs.wiegand import decode, frame
from tests.support.waiting import wait_for

ADDRESS = 101


def pty_pair() -> tuple[int, int]:
    a, b = os.openpty()
    tty.setraw(a)
    tty.setraw(b)
    return a, b


@pytest.mark.parametrize("scbk", [bytes(range(16)), None], ids=["secure", "install-mode"])
def test_daemon_as_pd_reports_a_grant_as_a_card_read(scbk: bytes | None) -> None:
    cp_end, pd_end = pty_pair()
    reader = OsdpReader(pd_end, ADDRESS, scbk)
    flags = [osdp.LibFlag.EnforceSecure] if scbk else [osdp.LibFlag.InstallMode]
    panel = osdp.ControlPanel([osdp.PDInfo(ADDRESS, FdChannel(cp_end), scbk=scbk, flags=flags)], log_level=osdp.LogLevel.Warning)
    panel.start()
    try:
        assert panel.online_wait(ADDRESS, 10)
        if scbk:
            assert panel.is_sc_active(ADDRESS)
        reader.card(frame(41551, 68))
        event = panel.get_event(ADDRESS, 10)
        assert event is not None and event["event"] == osdp.Event.CardRead
        assert event["format"] == osdp.CardFormat.Wiegand and event["length"] == 26
        assert decode(unpack_bits(event["data"], 26)) == (68, 41551)
        # The panel answers with its LED; the reader takes the command off libosdp's queue.
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1, "on_count": 5,
               "off_count": 5, "on_color": osdp.CommandLEDColor.Green, "off_color": osdp.CommandLEDColor.Black,
               "timer_count": 10, "temporary": True}
        panel.submit_command(ADDRESS, led)
        received: list[dict] = []
        assert wait_for(lambda: bool(received.extend(reader.drain()) or received), 10.0)
        assert received[0]["command"] == osdp.Command.LED and received[0]["on_color"] == osdp.CommandLEDColor.Green
        assert reader.drain() == []
    finally:
        panel.stop()
        reader.close()
        os.close(cp_end)
        os.close(pd_end)


def test_daemon_as_cp_switches_the_pd_output_for_the_open_time() -> None:
    cp_end, pd_end = pty_pair()
    key = bytes(range(16, 32))
    caps = osdp.PDCapabilities([(osdp.Capability.OutputControl, 1, 4), (osdp.Capability.LEDControl, 1, 1)])  # 4 outputs
    board = osdp.PeripheralDevice(osdp.PDInfo(ADDRESS, FdChannel(pd_end), scbk=key, flags=[osdp.LibFlag.EnforceSecure]),
                                  caps, log_level=osdp.LogLevel.Warning)
    board.start()
    panel = OsdpPanel(cp_end, ADDRESS, key, output=2)
    try:
        assert wait_for(lambda: panel.online, 10.0)
        panel.unlock(4.5)
        commands = [board.get_command(10), board.get_command(10)]
        output = next(c for c in commands if c and c["command"] == osdp.Command.Output)
        assert output["output_no"] == 2 and output["control_code"] == OUTPUT_TEMPORARY_ON
        assert output["timer_count"] == 45  # 100 ms units
        led = next(c for c in commands if c and c["command"] == osdp.Command.LED)
        assert led["on_color"] == osdp.CommandLEDColor.Green
    finally:
        panel.close()
        board.stop()
        os.close(cp_end)
        os.close(pd_end)


def test_bits_pack_most_significant_first() -> None:
    assert pack_bits([1, 0, 1, 1, 0, 0, 0, 0, 1]) == bytes([0b10110000, 0b10000000])
    assert unpack_bits(pack_bits(frame(999, 99)), 26) == frame(999, 99)
