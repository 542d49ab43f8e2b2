"""The hub console's gatekeeping, against a real uvicorn on loopback: passwords (scrypt), sessions
(HttpOnly, SameSite=Strict, Secure with TLS), CSRF on every POST, login rate limits, roles
(viewers see no names or uids and change nothing), upload bounds, and every view audited."""

from __future__ import annotations

import dataclasses
import datetime
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.harness.pg_server import PgServer
from bench.harness.sync_helpers import new_device, person
from edge.audit.journal import AuditLog
from edge.config import Config, HubConfig
from edge.errors import ConfigError
from edge.gallery.changes import SyncPerson
from sync import protocol
from sync.hub.console.audit import _cell
from sync.hub.console.ratelimit import LoginLimiter
from sync.hub.console.server import ConsoleServer, check_listen
from sync.hub.console.sessions import Sessions, check_csrf
from sync.hub.console.users import UserError, UserStore, check_password, hash_password
from sync.hub.service import Hub
from tests.support.console import ConsoleClient
from tests.support.databases import new_database

PASSWORDS = {"ada": "admin password 1", "otto": "operator password", "vera": "viewer password 1"}


def _cfg(tmp_path: Path, **hub: object) -> Config:
    return dataclasses.replace(Config(), hub=HubConfig(data_dir=str(tmp_path / "hub"), web_port=0, **hub))


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[ConsoleServer, Hub, str]]:
    cfg = _cfg(tmp_path)
    hub = Hub(cfg.hub)
    _data_dir, _kek, ident = new_device(tmp_path, "door-1")
    hub.store.add_device("door-1", ident.public()["sign_public_key"], ident.public()["seal_public_key"], ("staff",))
    alice = person(1)
    hub.store.add_person(alice)
    with AuditLog.open(_data_dir) as log:
        records = [log.append("decision", {"camera": "front", "door": "main", "decision": "grant", "person_uid": alice.uid, "score": 0.71})]
    hub.store.ingest_audit("door-1", protocol.encode({"v": 1, "type": "audit", "device": "door-1", "records": [r.to_dict() for r in records]}))
    server = ConsoleServer(cfg, hub, port=0)
    for (name, password), role in zip(PASSWORDS.items(), ("admin", "operator", "viewer"), strict=True):
        server.console.users.add(name, role, password)
    server.start()
    try:
        yield server, hub, alice.uid
    finally:
        server.stop()
        hub.close()


def _actions(hub: Hub) -> list[tuple[str, str, dict]]:
    return [(r[0], r[1], json.loads(r[2])) for r in hub.store.db.execute("SELECT action, subject, detail FROM hub_audit ORDER BY rowid")]


def test_passwords_are_salted_scrypt_and_checked_in_full() -> None:
    a, b = hash_password("a long password", 10), hash_password("a long password", 10)
    assert a != b and a.startswith("scrypt$10$8$1$") and "a long password" not in a
    assert check_password("a long password", a) and check_password("a long password", b)
    assert not check_password("a long passworD", a) and not check_password("", a) and not check_password("x", "garbage")


def test_user_store_add_verify_passwd_remove(tmp_path: Path) -> None:
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub")))
    users = UserStore(hub.store.db)
    with pytest.raises(UserError, match="at least 12"):
        users.add("bob", "admin", "short")
    with pytest.raises(UserError, match="role"):
        users.add("bob", "root", "long enough password")
    with pytest.raises(UserError, match="user name"):
        users.add("bob smith", "admin", "long enough password")
    users.add("bob", "operator", "long enough password")
    with pytest.raises(UserError, match="exists"):
        users.add("bob", "admin", "another long password")
    assert users.verify("bob", "long enough password").role == "operator"
    assert users.verify("bob", "long enough passwore") is None and users.verify("nobody", "long enough password") is None
    hub.store.db.execute("INSERT INTO hub_sessions VALUES ('h', 'bob', 'c', 0, 0, '')")
    users.passwd("bob", "a new long password", "viewer")
    assert users.verify("bob", "long enough password") is None and users.verify("bob", "a new long password").role == "viewer"
    assert hub.store.db.execute("SELECT COUNT(*) FROM hub_sessions")[0][0] == 0  # a new password ends the sessions
    users.remove("bob")
    assert users.list() == [] and users.verify("bob", "a new long password") is None
    hub.close()


def test_login_limiter_per_user_and_per_address() -> None:
    now = [0.0]
    limiter = LoginLimiter(per_user=3, per_address=5, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.allowed("ada", "10.0.0.1")
        limiter.failed("ada", "10.0.0.1")
    assert not limiter.allowed("ada", "10.0.0.2")  # the account, from anywhere
    assert limiter.allowed("bob", "10.0.0.1")
    limiter.failed("bob", "10.0.0.1")
    limiter.failed("eve", "10.0.0.1")
    assert not limiter.allowed("carl", "10.0.0.1")  # the address, for any account
    assert limiter.allowed("carl", "10.0.0.3")
    now[0] = 61.0
    assert limiter.allowed("ada", "10.0.0.1")
    limiter.failed("dan", "10.0.0.9")
    limiter.succeeded("dan")
    assert len(limiter._recent("u:dan")) == 0 and len(limiter._recent("a:10.0.0.9")) == 1


def test_csrf_check_refuses_missing_and_wrong_tokens() -> None:
    assert check_csrf("token", "token")
    assert not check_csrf("token", None) and not check_csrf("token", "") and not check_csrf("token", "tokeN") and not check_csrf("", "")


def test_listening_off_loopback_needs_tls_or_an_explicit_waiver() -> None:
    assert check_listen("127.0.0.1", "", "", False) is False and check_listen("::1", "", "", False) is False
    with pytest.raises(ConfigError, match="not loopback"):
        check_listen("0.0.0.0", "", "", False)
    with pytest.raises(ConfigError, match="both or neither"):
        check_listen("127.0.0.1", "cert.pem", "", False)
    assert check_listen("0.0.0.0", "cert.pem", "key.pem", False) is True
    assert check_listen("192.0.2.1", "", "", True) is False


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted() -> None:
    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("+1") == "'+1" and _cell("@x") == "'@x" and _cell("door-1") == "door-1"
    assert _cell(None) == "" and _cell(0.5) == "0.5"


def test_sign_in_cookie_wrong_password_and_rate_limit(console) -> None:
    server, hub, _uid = console
    raw = ConsoleClient(server.url, follow=False)
    raw.get("login")
    assert raw.post("login", {"user": "ada", "password": "wrong password!"}).status == 401
    assert raw.cookie("fg_session") is None
    ok = raw.post("login", {"user": "ada", "password": PASSWORDS["ada"]})
    assert ok.status == 303
    cookie = next(c for c in ok.cookies if c.startswith("fg_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie  # plain loopback: no TLS to ask for
    # A login form posted without its token (a cross-site login) is refused.
    fresh = ConsoleClient(server.url)
    assert fresh.post("login", {"user": "ada", "password": PASSWORDS["ada"]}, csrf=False).status == 403
    # Five wrong passwords for one account: the right one is refused too, until the window passes.
    guesser = ConsoleClient(server.url)
    guesser.get("login")
    for i in range(5):
        assert guesser.post("login", {"user": "otto", "password": f"guess number {i}"}).status == 401
    assert guesser.post("login", {"user": "otto", "password": PASSWORDS["otto"]}).status == 429
    for _ in range(20):  # hammering on: refused, and recorded once a minute, not once a try
        assert guesser.post("login", {"user": "otto", "password": "again"}).status == 429
    actions = [a for a, _s, _d in _actions(hub)]
    assert actions.count("console.login_failed") == 6 and actions.count("console.login_refused") == 2 and actions.count("console.login") == 1


def test_every_post_needs_the_sessions_csrf_token(console) -> None:
    server, hub, _uid = console
    c = ConsoleClient(server.url)
    assert c.login("ada", PASSWORDS["ada"]).url.endswith("/devices")
    assert c.post("push", {"target": "all"}, csrf=False).status == 403
    assert c.post("push", {"target": "all", "csrf": "x" * 43}).status == 403
    other = ConsoleClient(server.url)
    other.login("otto", PASSWORDS["otto"])
    assert c.post("push", {"target": "all", "csrf": other.csrf}).status == 403  # another session's token
    assert c.post("logout", {}, csrf=False).status == 403  # even signing out
    refused = [d for a, _s, d in _actions(hub) if a == "console.refused"]
    assert [d["why"] for d in refused] == ["csrf"] * 4 and refused[0]["path"] == "/push"
    assert hub.store.db.execute("SELECT COUNT(*) FROM bundles")[0][0] == 0  # nothing was pushed


def test_signed_out_requests_get_no_data(console) -> None:
    server, _hub, uid = console
    c = ConsoleClient(server.url, follow=False)
    for path in ("", "devices", "persons", "audit", "audit.csv", "status.json", "live/stream", "hub-log", f"persons/{uid}"):
        answer = c.get(path)
        assert answer.status == 303 and uid not in answer.text, path
    c.get("login")
    assert c.post("push", {"target": "all"}).status == 401
    forged = ConsoleClient(server.url, follow=False)
    forged.jar.set_cookie(_cookie("fg_session", "made-up-token"))
    assert forged.get("devices").status == 303


def _cookie(name: str, value: str):
    import http.cookiejar

    return http.cookiejar.Cookie(0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False, None, None, {})


def test_viewer_sees_no_names_or_uids_and_cannot_enroll_push_or_erase(console) -> None:
    server, hub, uid = console
    alice = next(p for p in hub.store.person_entries() if p.uid == uid).name
    v = ConsoleClient(server.url)
    v.login("vera", PASSWORDS["vera"])
    for path in ("devices", "audit", "live", "audit.csv", "status.json"):
        answer = v.get(path)
        assert answer.status == 200 and uid not in answer.text and alice not in answer.text, path
    assert "grant" in v.get("audit").text  # the decision itself is there
    for path in ("persons", "persons/new", f"persons/{uid}", "review", "hub-log"):
        assert v.get(path).status == 403, path
    v.get("devices")
    assert v.post_files("persons", {"name": "Mallory"}, [("photos", "a.jpg", b"\xff\xd8\xff")]).status == 403
    assert v.post("push", {"target": "all"}).status == 403
    assert v.post(f"persons/{uid}/erase", {}).status == 403
    assert v.get(f"audit?person={uid}").status == 400  # no searching by person either
    assert hub.store.find_person(uid) == uid and hub.store.db.execute("SELECT COUNT(*) FROM bundles")[0][0] == 0
    # An operator may enroll and push but not erase.
    o = ConsoleClient(server.url)
    o.login("otto", PASSWORDS["otto"])
    page = o.get(f"persons/{uid}")
    assert alice in page.text and "erase-submit" not in page.text
    assert o.post(f"persons/{uid}/erase", {}).status == 403
    denied = [d["needs"] for a, s, d in _actions(hub) if a == "console.denied"]
    assert denied.count("operator") == 6 and denied.count("admin") == 3  # hub-log, and the two erase attempts


def test_every_page_view_and_action_is_audited_with_the_user(console) -> None:
    server, hub, uid = console
    c = ConsoleClient(server.url)
    c.login("ada", PASSWORDS["ada"])
    for path in ("persons?q=ali", f"persons/{uid}", "review", "audit?decision=grant", "audit/verify", "live", "hub-log"):
        assert c.get(path).status == 200, path
    assert uid in c.get("audit?decision=grant").text
    assert "ok" in c.get("audit/verify").text
    assert c.post(f"persons/{uid}", {"groups": "staff, night", "valid_until": "2030-01-31", "cards": "1234"}).status == 200
    profile = next(p for p in hub.store.persons() if p.uid == uid).profile
    assert profile.groups == ("staff", "night") and profile.cards == (1234,)
    assert datetime.date.fromtimestamp(profile.valid_until) == datetime.date(2030, 1, 31)
    views = [(d["path"], d.get("query")) for a, s, d in _actions(hub) if a == "console.view" and s == "ada"]
    assert ("/persons", "q=ali") in views and (f"/persons/{uid}", None) in views and ("/hub-log", None) in views
    assert any(a == "console.person_updated" and d["uid"] == uid for a, _s, d in _actions(hub))


def test_uploads_are_bounded_and_checked_before_decoding(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, web_max_upload_bytes=100_000)
    hub = Hub(cfg.hub)
    server = ConsoleServer(cfg, hub, port=0)
    server.console.users.add("otto", "operator", PASSWORDS["otto"])
    server.start()
    try:
        c = ConsoleClient(server.url)
        c.login("otto", PASSWORDS["otto"])
        c.get("persons/new")
        assert c.post_files("persons", {"name": "Big"}, [("photos", "big.jpg", b"\xff\xd8\xff" + bytes(200_000))]).status == 413
        c.get("persons/new")
        answer = c.post_files("persons", {"name": "Junk"}, [("photos", "a.jpg", b"GIF89a" + bytes(100)), ("photos", "b.png", b"")])
        assert answer.status == 422 and "not enrolled" in answer.text.lower() and "empty file" in answer.text
        assert server.console._perception is None  # nothing that is not an image reached the face models
        assert hub.store.person_entries() == []
    finally:
        server.stop()
        hub.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "console.crt", tmp_path / "console.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_from_config_and_secure_cookies(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    cfg = _cfg(tmp_path, web_tls_cert_file=str(cert), web_tls_key_file=str(key))
    hub = Hub(cfg.hub)
    server = ConsoleServer(cfg, hub, port=0)
    server.console.users.add("ada", "admin", PASSWORDS["ada"])
    server.start()
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        c = ConsoleClient(server.url, follow=False, context=context)
        c.get("login")
        ok = c.post("login", {"user": "ada", "password": PASSWORDS["ada"]})
        assert ok.status == 303 and "Secure" in next(x for x in ok.cookies if x.startswith("fg_session="))
        with pytest.raises(OSError):  # plain HTTP to the TLS port gets nothing
            ConsoleClient(server.url.replace("https", "http")).opener.open(server.url.replace("https", "http") + "login", timeout=10).read()
    finally:
        server.stop()
        hub.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_users_and_sessions_on_both_databases(kind: str, tmp_path: Path, pg: PgServer | None) -> None:
    url = new_database(pg, "console_users") if kind == "postgresql" else ""
    hub = Hub(HubConfig(data_dir=str(tmp_path / "hub"), database=url))
    try:
        users = UserStore(hub.store.db)
        sessions = Sessions(hub.store.db, idle_s=60)
        users.add("ada", "admin", PASSWORDS["ada"])
        token = sessions.start("ada", "127.0.0.1")
        found = sessions.find(token)
        assert found is not None and found.user == "ada" and len(found.csrf) >= 40
        assert token not in str(hub.store.db.execute("SELECT * FROM hub_sessions"))  # only its hash is stored
        assert sessions.find(token + "x") is None and sessions.find("") is None
        hub.store.db.execute("UPDATE hub_sessions SET seen = seen - 61")
        assert sessions.find(token) is None  # idle too long
        token = sessions.start("ada", "127.0.0.1")
        users.passwd("ada", "another long password")
        assert sessions.find(token) is None and users.verify("ada", "another long password") is not None
    finally:
        hub.close()


def test_review_queue_page_decides_held_uploads(console) -> None:
    server, hub, uid = console
    queue = server.console.review
    alice = next(p for p in hub.store.persons() if p.uid == uid)
    held = []
    for i in (7, 8):  # same name as alice: held for review, never merged on its own
        upload = SyncPerson(f"{i:032x}", dataclasses.replace(alice.profile, groups=()), alice.model, alice.embeddings[:1], (0.5,))
        outcome = queue.submit("door-1", {"uid": upload.uid, "audit_seq": i}, [upload])
        assert outcome.action == "review"
        held.append(outcome.review_id)
    c = ConsoleClient(server.url)
    c.login("otto", PASSWORDS["otto"])
    page = c.get("review")
    assert f"same name as {uid}" in page.text and page.text.count('value="reject"') == 2
    assert c.post(f"review/{held[0]}", {"action": "new", "name": "Alice the second"}).status == 200
    assert c.post(f"review/{held[1]}", {"action": "reject"}).status == 200
    assert c.post(f"review/{held[1]}", {"action": "reject"}).url.endswith("already%20decided%20%28rejected%29")
    assert [e.state for e, _p in queue.items(all_states=True)] == ["new", "rejected"]
    assert hub.store.find_person("Alice the second") == f"{7:032x}"
    decided = [(d["item"], d["action"]) for a, s, d in _actions(hub) if a == "console.reviewed" and s == "otto"]
    assert decided == [(held[0], "new"), (held[1], "reject")]
    assert [d["by"] for a, _s, d in _actions(hub) if a in ("review.new", "review.rejected")] == ["otto", "otto"]


def test_hub_serve_refuses_a_console_off_loopback_without_tls(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\nweb_port = 18765\nweb_address = "0.0.0.0"\n')
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(config), "hub", "serve"], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "not loopback and the console has no TLS" in proc.stderr, proc.stderr[-1000:]


def _first_event(client: ConsoleClient) -> str:
    """The live stream's first decision event, read from the open response."""
    import urllib.request

    with client.opener.open(urllib.request.Request(client.base + "live/stream"), timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        buf = b""
        while b"event: decision" not in buf or not buf.endswith(b"\n\n"):
            buf += r.read1(65536)
    return buf.decode()


def test_live_stream_sends_decisions_with_names_only_to_operators(console) -> None:
    server, hub, uid = console
    alice = next(p for p in hub.store.person_entries() if p.uid == uid).name
    o, v = ConsoleClient(server.url), ConsoleClient(server.url)
    o.login("otto", PASSWORDS["otto"])
    v.login("vera", PASSWORDS["vera"])
    seen = _first_event(o)
    data = json.loads(seen.split("data: ", 1)[1].split("\n", 1)[0])
    assert data["decision"] == "grant" and data["door"] == "main" and data["person_uid"] == uid and data["person"] == alice
    seen = _first_event(v)
    data = json.loads(seen.split("data: ", 1)[1].split("\n", 1)[0])
    assert data["decision"] == "grant" and "person_uid" not in data and uid not in seen and alice not in seen


def test_audit_filters_csv_and_sign_out(console) -> None:
    server, hub, uid = console
    c = ConsoleClient(server.url)
    c.login("otto", PASSWORDS["otto"])
    assert uid in c.get("audit?door=main&decision=grant").text
    assert uid not in c.get("audit?door=back").text and uid not in c.get("audit?decision=deny").text
    assert uid not in c.get("audit?since=2999-01-01").text and uid in c.get("audit?until=2999-01-01&since=2000-01-01").text
    assert c.get("audit?since=yesterday").status == 400
    csv_text = c.get("audit.csv?decision=grant").text.splitlines()
    assert csv_text[0] == "time,device,seq,kind,door,camera,decision,score,person_uid,person" and uid in csv_text[1] and "main" in csv_text[1]
    c.get("devices")
    token = c.cookie("fg_session").value
    replay = ConsoleClient(server.url, follow=False)
    replay.jar.set_cookie(_cookie("fg_session", token))
    assert replay.get("devices").status == 200  # the cookie alone is the session...
    assert c.post("logout", {}).url.endswith("/login")
    assert replay.get("devices").status == 303  # the signed-out session's cookie opens nothing
    assert hub.store.db.execute("SELECT COUNT(*) FROM hub_sessions WHERE user_name='otto'")[0][0] == 0


@pytest.mark.parametrize("trusted", [(), ("127.0.0.1",)])
def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path, trusted: tuple[str, ...]) -> None:
    cfg = _cfg(tmp_path, web_trusted_proxies=trusted)
    hub = Hub(cfg.hub)
    server = ConsoleServer(cfg, hub, port=0).start()
    try:
        c = ConsoleClient(server.url)
        c.get("login")
        assert c.post("login", {"user": "ada", "password": "wrong password!"}, headers={"X-Forwarded-For": "203.0.113.9"}).status == 401
        failed = [d["address"] for a, _s, d in _actions(hub) if a == "console.login_failed"]
        assert failed == (["203.0.113.9"] if trusted else ["127.0.0.1"])  # a client cannot pick its address for the limiter
    finally:
        server.stop()
        hub.close()
