"""The device's audit of refused messages is bounded per (topic, error) and exact in its counts."""

from __future__ import annotations

from sync.rejects import RejectLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _body(i: int) -> dict:
    return {"topic": "t", "error": "SchemaError", "reason": f"bad {i}", "bytes": 10, "sha256": f"{i:064x}"}


def test_a_flood_is_recorded_up_to_the_burst_then_summarised_with_exact_counts() -> None:
    clock, written = Clock(), []
    limiter = RejectLimiter(lambda kind, body: written.append((kind, body)), burst=3, window_s=60, clock=clock)
    results = [limiter.record("a/ack", "SchemaError", _body(i)) for i in range(1000)]
    assert results[:3] == [True] * 3 and not any(results[3:])
    assert len(written) == 3
    limiter.record("a/gallery", "SignatureError", _body(0))  # another key has its own budget
    assert len(written) == 4
    clock.t = 30
    limiter.flush()
    assert len(written) == 4  # the window is not over
    clock.t = 61
    limiter.flush()
    summaries = [b for _, b in written if "suppressed" in b]
    assert len(summaries) == 1 and summaries[0]["suppressed"] == 997 and summaries[0]["bytes"] == 9970
    assert summaries[0]["topic"] == "a/ack" and summaries[0]["sha256"] == f"{999:064x}"
    assert all(kind == "rejected_message" for kind, _ in written)
    # A new window starts with a fresh burst.
    assert limiter.record("a/ack", "SchemaError", _body(1))


def test_stop_writes_what_is_still_counted() -> None:
    clock, written = Clock(), []
    limiter = RejectLimiter(lambda kind, body: written.append(body), burst=1, window_s=60, clock=clock)
    for i in range(5):
        limiter.record("t", "E", _body(i))
    limiter.flush(force=True)
    assert [b.get("suppressed") for b in written] == [None, 4]
