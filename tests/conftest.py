"""Shared fixtures: real data from ../shared/data and the models built by `make setup`.

Data-driven tests skip on a developer clone without ../shared/data, but FAIL when CI=true, so
CI always exercises real faces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.harness.mqtt_broker import MOSQUITTO, Broker, SecureBroker, secure_fleet
from edge.config import Config
from edge.perception.modelstore import ModelStore, default_models_dir

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally; in CI a missing dependency or dataset is a broken setup, so fail."""
    if IN_CI:
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        unavailable(f"shared data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    store = ModelStore(default_models_dir())
    if not store.records:
        unavailable("models not built; run `make setup`")
    return store


@pytest.fixture(scope="session")
def perception(model_store: ModelStore):
    from edge.perception.faces import Perception

    return Perception(Config(), model_store)


@pytest.fixture(scope="session")
def mosquitto() -> str:
    """The mosquitto binary the broker fixtures run (apt-get install mosquitto)."""
    if not Path(MOSQUITTO).exists():
        unavailable(f"mosquitto not installed at {MOSQUITTO} (apt-get install mosquitto)")
    return MOSQUITTO


@pytest.fixture
def broker(mosquitto: str, tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port for this test, killed after it."""
    with Broker(tmp_path / "broker") as b:
        yield b


# The secure broker's fleet: device id → groups. door-c is in no group the others share.
SECURE_DEVICES: dict[str, tuple[str, ...]] = {"door-a": ("staff",), "door-b": ("staff",), "door-c": ("night",)}


@pytest.fixture
def secure_broker(mosquitto: str, tmp_path: Path) -> Iterator[SecureBroker]:
    """A real mosquitto as docs/sync.md secures it: TLS with client certificates required, a
    password per user, and the shipped ACL (packaging/mosquitto/facegate.acl), for the hub
    (user "hub") and SECURE_DEVICES. `.config(user)` gives a `[sync]` / `[hub]` table's keys."""
    fleet = secure_fleet(tmp_path / "secure-broker", SECURE_DEVICES)
    try:
        yield fleet
    finally:
        fleet.broker.kill()


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
