"""journald and the printed lines name a person by uid unless `[privacy] show_names` is on.

The journal outlives `gallery remove` (and log shippers copy it off the device), so what the
daemon logs about a decision follows the same rule as MQTT and ZeroMQ (edge/events.py)."""

from __future__ import annotations

import logging
import time

import pytest

from edge.cli.run import human_line
from edge.events import DecisionEvent
from edge.service.systemd import ServiceObserver

NAME, UID = "Ada Lovelace", "c3" * 16


def decision(show_names: bool) -> DecisionEvent:
    return DecisionEvent(
        ts=time.time(), camera="front", track_id=3, decision="grant", reason="match", person=NAME, person_id=1, person_uid=UID,
        score=0.71, threshold=0.4, target_fmr=1e-4, door="front", frames_used=3, quality=0.9, latency_ms=120.0,
        usable_latency_ms=80.0, first_seen=time.time(), source_t=1.0, box=(0.0, 0.0, 10.0, 10.0), show_names=show_names,
    )


def journal_record(event: DecisionEvent, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    class _Silent:
        def notify(self, *_: str) -> None:
            pass

    with caplog.at_level(logging.INFO, logger="facegate"):
        ServiceObserver(_Silent(), journal=True).on_decision(event)  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if getattr(r, "FACEGATE_DECISION", None)]
    return record


def test_the_journal_carries_the_uid_and_no_name_by_default(caplog: pytest.LogCaptureFixture) -> None:
    record = journal_record(decision(show_names=False), caplog)
    assert record.getMessage() == f"grant {UID} at front (track 3, match)"
    assert record.FACEGATE_PERSON_UID == UID and not hasattr(record, "FACEGATE_PERSON")
    assert NAME not in str(vars(record))


def test_the_journal_names_the_person_when_show_names_is_on(caplog: pytest.LogCaptureFixture) -> None:
    record = journal_record(decision(show_names=True), caplog)
    assert record.getMessage() == f"grant {NAME} at front (track 3, match)"
    assert record.FACEGATE_PERSON == NAME and record.FACEGATE_PERSON_UID == UID


def test_every_serialised_form_follows_the_one_rule() -> None:
    hidden, shown = decision(show_names=False), decision(show_names=True)
    assert hidden.body["person_uid"] == UID and "person" not in hidden.body and NAME not in human_line(hidden)
    assert hidden.label == UID and hidden.audit_body()["person_uid"] == UID
    assert shown.body["person"] == NAME and shown.body["person_uid"] == UID and NAME in human_line(shown)
    # The audit journal is not encrypted and not erasable: never a name, whatever the setting.
    assert "person" not in shown.audit_body() and NAME not in str(shown.audit_body())
