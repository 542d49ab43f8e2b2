"""The hub's read-only status page: fleet, pending acks, erasures and last decisions, rendered by
a real headless Chromium (Debian `chromium`) into a screenshot, and the same data as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import cv2

from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.config import HubConfig
from sync import protocol
from sync.hub.service import Hub
from sync.hub.web import StatusPage
from tests.conftest import unavailable

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_status_page_renders_in_chromium(tmp_path: Path) -> None:
    if CHROMIUM is None:
        unavailable("chromium not installed (apt-get install chromium)")
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    data_dir, _kek, ident = new_device(tmp_path, "door-1")
    hub.store.add_device("door-1", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    hub.store.add_device("door-2", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    hub.store.record_status("door-1", {"online": True, "gallery": {"version": 4, "persons": 1}, "queue": 0})
    alice = person(1)
    hub.store.add_person(alice)
    with AuditLog.open(data_dir) as log:
        records = [log.append("decision", {"camera": "front", "decision": "grant", "person_uid": alice.uid, "score": 0.71})]
    hub.store.ingest_audit("door-1", protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in records]}))
    out = hub.bundles(group="staff")[0]
    hub.store.record_gallery_ack({"device": "door-1", "scope": out.scope, "seq": out.seq, "ok": True, "gallery_version": 4, "error": ""})
    page = StatusPage(hub.store, "127.0.0.1", 0).start()
    try:
        data = json.loads(urllib.request.urlopen(page.url + "status.json", timeout=10).read())
        html = urllib.request.urlopen(page.url, timeout=10).read().decode()
        shot = tmp_path / "hub.png"
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1100,800", page.url],
            check=False, capture_output=True, text=True, timeout=60,
        )
    finally:
        page.stop()
        hub.close()
    assert [d["device"] for d in data["fleet"]] == ["door-1", "door-2"] and data["fleet"][0]["online"] and not data["fleet"][1]["online"]
    assert data["pending_acks"] == [{"device": "door-2", "scope": out.scope, "seq": out.seq}]
    assert [(d["decision"], d["person_uid"]) for d in data["decisions"]] == [("grant", alice.uid)]
    assert "door-2" in html and alice.uid in html and alice.profile.name not in html  # uids only, never names
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-1000:]
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (800, 1100)
    # Something was drawn: a blank or failed page is one flat colour.
    assert image.std() > 10
