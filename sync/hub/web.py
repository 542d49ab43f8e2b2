"""The hub's read-only status page: fleet status, pending acks, erasures, alerts, last decisions.

A plain `http.server` on `[hub] web_address:web_port`, one HTML page (`/`) and the same data as
JSON (`/status.json`); nothing on it changes state, and it names persons only by uid (the page
reads no keys, so it cannot show names). Put it behind a reverse proxy with authentication
before exposing it beyond loopback.
"""

from __future__ import annotations

import html
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sync.hub.store import HubStore

_STYLE = "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #bbb;padding:3px 8px;font-size:14px}th{background:#eee}.bad{color:#b00}.ok{color:#070}"


def snapshot(store: HubStore, decisions: int = 20) -> dict[str, Any]:
    pending = store.pending_acks()
    fleet = []
    for d in store.devices():
        gallery = d.status.get("gallery") if isinstance(d.status.get("gallery"), dict) else {}
        fleet.append({"device": d.id, "groups": list(d.groups), "online": bool(d.status.get("online")), "last_seen": d.last_seen,
                      "gallery_version": gallery.get("version"), "persons": gallery.get("persons"), "audit_seq": d.audit_seq,
                      "queue": d.status.get("queue"), "pending": [f"{s} #{q}" for dev, s, q in pending if dev == d.id]})
    last = store.audit_query(kind="decision", limit=decisions)
    return {
        "generated": int(time.time()), "fleet": fleet,
        "pending_acks": [{"device": d, "scope": s, "seq": q} for d, s, q in pending],
        "erasures": [{"uid": u, "device": d, "confirmed": c} for u, d, _r, c in store.erasures() if c is None],
        "alerts": [{"at": a, "device": d, "problem": p} for a, d, p in store.alerts(20)],
        "decisions": [{"device": dev, "seq": r.seq, "ts_us": r.ts_us, "camera": r.body.get("camera"), "decision": r.body.get("decision"),
                       "person_uid": r.body.get("person_uid"), "score": r.body.get("score")} for dev, r in reversed(last)],
    }


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<h2>{html.escape(title)} ({len(rows)})</h2><table><tr>{head}</tr>{body or '<tr><td colspan=99>none</td></tr>'}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None else str(value)


def render(data: dict[str, Any]) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>facegate hub</title><style>{_STYLE}</style></head><body>"
        f"<h1>facegate hub</h1><p>generated {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['generated']))}</p>"
        + _table("Fleet", data["fleet"], ["device", "groups", "online", "gallery_version", "persons", "audit_seq", "queue", "pending"])
        + _table("Pending gallery acks", data["pending_acks"], ["device", "scope", "seq"])
        + _table("Pending erasures", data["erasures"], ["uid", "device"])
        + _table("Last decisions", data["decisions"], ["device", "seq", "camera", "decision", "person_uid", "score"])
        + _table("Alerts", data["alerts"], ["at", "device", "problem"])
        + "</body></html>"
    )


class StatusPage:
    def __init__(self, store: HubStore, address: str, port: int) -> None:
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in ("/", "/status.json"):
                    self.send_error(404)
                    return
                data = snapshot(page.store)
                body = json.dumps(data).encode() if self.path == "/status.json" else render(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if self.path == "/status.json" else "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.store = store
        self.server = ThreadingHTTPServer((address, port), Handler)
        self.url = f"http://{address}:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, name="hub-web", daemon=True)

    def start(self) -> StatusPage:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
