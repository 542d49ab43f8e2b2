"""Issue 21 acceptance for the hub console, in Debian's real headless Chromium driven by selenium
through Debian's chromedriver (both paths given: nothing is downloaded).

Real processes: mosquitto on loopback, `facegate hub serve` with the console, and one `facegate
run` device daemon on an image-folder source showing a held-out LFW photo of Tony Blair. In the
browser: a wrong password is refused; the admin signs in, enrolls Tony Blair from two LFW photos
(each photo's verdict shown), pushes to the group `staff`, sees the device's ack on the devices
page, sees its grant arrive in the live view (server-sent events), finds it in the audit search,
reports it "not this person" and sees the device's answer on the Reports page,
erases him and watches the device's confirmation arrive; a form posted without its CSRF token is
refused; a viewer cannot enroll. A screenshot of every page is kept under
build/screenshots/console/ (or $FACEGATE_SCREENSHOTS)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.harness.mqtt_broker import Broker, free_port
from bench.harness.sync_helpers import new_device
from edge.config import load_config
from sync.hub.service import Hub
from tests.conftest import DATA, unavailable
from tests.support.cli import facegate_cli
from tests.support.console import ConsoleClient
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
LFW = DATA / "lfw" / "images"
PERSON, ENROLL, PROBE = "Tony_Blair", ("Tony_Blair_0018.jpg", "Tony_Blair_0032.jpg"), "Tony_Blair_0064.jpg"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("FACEGATE_SCREENSHOTS", REPO / "build" / "screenshots" / "console"))
ADMIN, VIEWER = ("ada", "admin password 1"), ("vera", "viewer password 1")


def _frames(folder: Path) -> None:
    folder.mkdir()
    probe = LFW / PERSON / PROBE
    black = folder / "black.png"
    cv2.imwrite(str(black), np.zeros(cv2.imread(str(probe)).shape, np.uint8))
    n = 0
    for _ in range(150):
        for src in [probe] * 4 + [black] * 2:
            (folder / f"{n:05d}{src.suffix}").symlink_to(src)
            n += 1


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class Page:
    def __init__(self, driver, base: str) -> None:
        self.driver, self.base, self.n = driver, base, 0

    def go(self, path: str) -> None:
        self.driver.get(self.base + path.lstrip("/"))

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return self.find("body").text

    def shot(self, name: str) -> None:
        self.n += 1
        assert self.driver.save_screenshot(str(SHOTS / f"{self.n:02d}-{name}.png"))

    def until(self, condition, timeout: float, what: str, reload: str = "") -> None:
        def check() -> bool:
            if reload:  # a GET of the page (a refresh after a POST would post again)
                self.go(reload)
            return bool(condition())
        wait_until(check, timeout, what)

    def sign_in(self, user: str, password: str) -> None:
        self.go("login")
        self.find("#user").send_keys(user)
        self.find("#password").send_keys(password)
        self.submit("#signin")

    def submit(self, css: str) -> None:
        """Clicks a form's button and waits for the next page (not the one being left)."""
        from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.find("html")
        self.find(css).click()

        def left(_driver: object) -> bool:
            # selenium's staleness_of, plus chromedriver's other way of saying the node is stale
            # when asked mid-navigation ("does not belong to the document"), which it raises.
            try:
                old.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:
                if "does not belong to the document" in str(exc):
                    return True
                raise
            return False

        WebDriverWait(self.driver, 120).until(left)


def test_console_in_chromium_with_a_running_device(tmp_path: Path, mosquitto: str) -> None:
    if not (LFW / PERSON / PROBE).exists():
        unavailable(f"LFW images not found under {LFW}")
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        unavailable("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    with Broker(tmp_path / "broker") as broker:
        _run(tmp_path, broker)


def _run(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    hub_cfg = tmp_path / "hub.toml"
    hub_cfg.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nclient_id = "hub-1"\nbroker_port = {broker.port}\nweb_port = {port}\n')
    facegate_cli(hub_cfg, "hub", "identity", "--write", str(tmp_path / "hubkeys"))
    data_dir, _kek, identity = new_device(tmp_path, "door-a")
    (tmp_path / "door-a.json").write_text(json.dumps(identity.public()))
    facegate_cli(hub_cfg, "admin", "device", "add", "door-a", "--identity", str(tmp_path / "door-a.json"), "--group", "staff")
    facegate_cli(hub_cfg, "admin", "user", "add", ADMIN[0], "--role", "admin", "--password-stdin", stdin=ADMIN[1] + "\n")
    facegate_cli(hub_cfg, "admin", "user", "add", VIEWER[0], "--role", "viewer", "--password-stdin", stdin=VIEWER[1] + "\n")
    assert [u["role"] for u in json.loads(facegate_cli(hub_cfg, "admin", "user", "list", "--json").stdout)] == ["admin", "viewer"]
    frames = tmp_path / "frames"
    _frames(frames)
    device_cfg = tmp_path / "door-a.toml"
    device_cfg.write_text(
        f'[gallery]\ndata_dir = "{data_dir}"\nkey_file = "{data_dir / "kek.key"}"\n[liveness]\nenabled = false\n[metrics]\nport = 0\n'
        f'[[camera]]\nname = "front"\nsource = "{frames}"\nfps = 4.0\n'
        # A door on that camera (no relay: decisions only); liveness is off in this test, so the door does not ask for it.
        f'[[door]]\nname = "main"\ncamera = "front"\nliveness_required = false\n'
        f'[sync]\nbroker_host = "127.0.0.1"\ndevice_id = "door-a"\ngroups = ["staff"]\nbroker_port = {broker.port}\n'
        f'hub_sign_key_file = "{tmp_path / "hubkeys" / "hub_sign.pub"}"\nreconnect_min_s = 1\nreconnect_max_s = 2\nack_timeout_s = 2.0\n')
    procs = [subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(hub_cfg), "hub", "serve"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-m", "edge.cli.main", "--config", str(device_cfg), "run", "--realtime"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})]
    hub = Hub(load_config(hub_cfg).hub)
    base = f"http://127.0.0.1:{port}/"
    driver = None
    try:
        wait_until(lambda: ConsoleClient(base).get("login").status == 200 if _listening(port) else False, 60, "the console")
        wait_until(lambda: all(d.status.get("online") for d in hub.store.devices()), 90, "the device online at the hub")
        driver = _browser()
        page = Page(driver, base)
        _browser_flow(page, hub)
        _viewer_flow(page, base)
    finally:
        if driver is not None:
            driver.quit()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errs = [proc.communicate(timeout=60)[1] for proc in procs]
        for err in errs:
            print(err[-3000:])
        hub.close()
    assert [proc.returncode for proc in procs] == [0, 0], errs


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _browser_flow(page: Page, hub: Hub) -> None:
    page.sign_in(ADMIN[0], "not the password")
    assert "Wrong user name or password." in page.text() and "/login" in page.driver.current_url
    page.shot("login-refused")
    page.sign_in(*ADMIN)
    assert page.driver.current_url.endswith("/devices") and "ada (admin)" in page.text()
    page.shot("devices")

    page.go("persons/new")
    page.find("#name").send_keys("Tony Blair")
    page.find("#groups").send_keys("staff")
    page.find("input[name=consent_text]").send_keys("agreed at the front desk")
    page.find("#photos").send_keys("\n".join(str(LFW / PERSON / f) for f in ENROLL))
    page.submit("#enroll-submit")
    page.until(lambda: "Enrolled" in page.find("#result").text, 120, "the enrollment result")
    verdicts = page.find("#verdicts").text
    assert all(f in verdicts for f in ENROLL) and "accepted" in verdicts, verdicts
    page.shot("enrolled")
    uid = hub.store.find_person("Tony Blair")
    enrolled = next(p for p in hub.store.persons() if p.uid == uid)
    assert enrolled.profile.groups == ("staff",) and enrolled.profile.consent_text == "agreed at the front desk" and len(enrolled.embeddings) == 2
    assert enrolled.profile.created_by == ADMIN[0]

    page.go("devices")
    from selenium.webdriver.support.ui import Select

    Select(page.find("#push-target")).select_by_value("group:staff")
    page.submit("#push-submit")
    assert "group:staff" in page.find("#pushed").text
    page.shot("pushed")
    page.until(lambda: page.find("#device-door-a .pending").text == "none" and page.find("#device-door-a .gallery").text != "-", 90,
               "the device's gallery ack on the devices page", reload="devices")
    page.shot("acked")

    page.go("live")
    page.until(lambda: "grant" in page.find("#live-rows").text and "Tony Blair" in page.find("#live-rows").text, 120, "a live grant")
    assert page.find("#live-state").text == "connected"
    page.shot("live")

    page.go("audit")
    page.find("#audit-person").send_keys("Tony Blair")
    page.find("#audit-door").send_keys("main")
    Select(page.find("#audit-decision")).select_by_value("grant")
    page.submit("#audit-submit")
    rows = page.find("#audit").text
    assert "grant" in rows and uid in rows and "door-a" in rows and "main" in rows, rows
    page.shot("audit-search")
    page.go("devices")
    assert "main" in page.find("#doors").text and "grant" in page.find("#doors").text

    # "Not this person" on that grant (docs/hub.md "Reports"): signed to door-a, which makes its
    # kept probe a negative of Tony Blair (so he is no longer granted there) and answers.
    page.go("audit?decision=grant")
    page.find("#audit .report-form input[name=reason]").send_keys("the camera shows someone else")
    page.submit("#audit .report-form button")
    assert "sent" in page.find("#made").text
    page.until(lambda: "applied" in page.find("#reports").text, 90, "door-a's answer to the report", reload="reports")
    page.shot("reports")

    # The push form without its CSRF token (a forged cross-site post): refused, nothing pushed.
    bundles = hub.store.db.execute("SELECT COUNT(*) FROM bundles")[0][0]
    page.go("devices")
    page.driver.execute_script("document.querySelector('#push input[name=csrf]').remove()")
    page.submit("#push-submit")
    assert page.find("#message-title").text == "Refused"
    assert hub.store.db.execute("SELECT COUNT(*) FROM bundles")[0][0] == bundles
    page.shot("csrf-refused")

    page.go(f"persons/{uid}")
    page.submit("#erase-submit")
    page.until(lambda: "erased" in page.find("#state").text, 60, "the erase")
    page.shot("erase-pending")
    page.until(lambda: "pending" not in page.find("#erasures").text and "door-a" in page.find("#erasures").text, 90,
               "door-a's erasure confirmation (the page refreshes itself)")
    page.shot("erase-confirmed")
    assert [c is not None for _u, _d, _r, c in hub.store.erasures(uid)] == [True]
    actions = {r[0] for r in hub.store.db.execute("SELECT action FROM hub_audit WHERE subject='ada'")}
    assert {"console.login", "console.view", "console.enroll", "console.enrolled", "console.push", "console.pushed", "console.live",
            "console.report", "console.reported", "console.erase", "console.erased", "console.refused"} <= actions, actions
    for path, name, marker in (("persons?erased=1", "persons", uid), ("review", "review", "nothing to review"),
                               ("audit/verify", "verify", "ok"), ("hub-log", "hub-log", "console.erased")):
        page.go(path)
        assert marker in page.text(), path
        page.shot(name)
    page.submit("header button")  # sign out


def _viewer_flow(page: Page, base: str) -> None:
    page.sign_in(*VIEWER)
    assert "vera (viewer)" in page.text() and "Persons" not in page.find("header").text
    page.go("persons/new")
    assert page.find("#message-title").text == "Not allowed"
    page.shot("viewer-cannot-enroll")
    page.go("audit")
    assert "Tony Blair" not in page.text() and page.driver.find_elements("css selector", "#audit-person") == []
    page.shot("viewer-audit")
    # Nor by posting the form directly with a valid session and token.
    c = ConsoleClient(base)
    c.login(*VIEWER)
    c.get("devices")
    photo = (LFW / PERSON / ENROLL[0]).read_bytes()
    assert c.post_files("persons", {"name": "Someone"}, [("photos", "a.jpg", photo)]).status == 403
