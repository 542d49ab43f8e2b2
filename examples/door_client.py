"""A door controller's view of facegate: follow decisions and door events, ask for status.

    python examples/door_client.py --events tcp://127.0.0.1:7700 [--control tcp://127.0.0.1:7701]
    python examples/door_client.py --events tcp://device:7700 --client-key door1.key_secret --server-key server.key

Uses only the public ZeroMQ API (docs/door.md) — pyzmq and JSON, nothing from facegate — so it
is also the template for a controller written in another language. It prints one line per
event; on a `grant` a real controller would pulse its own lock (when facegate does not drive
the relay itself), on `forced` / `held_open` raise an alarm.
"""

from __future__ import annotations

import argparse
import json
import sys

import zmq
import zmq.auth


def use_curve(sock: zmq.Socket, client_key: str | None, server_key: str | None) -> None:
    """CURVE when the daemon has it on ([zmq] curve_secret_key_file): this client's key pair (its
    public key allowed with `facegate zmq allow`) and the daemon's public key."""
    if not (client_key or server_key):
        return
    if not (client_key and server_key):
        raise SystemExit("CURVE needs both --client-key and --server-key")
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(client_key)
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]


def status(ctx: zmq.Context, endpoint: str, keys: tuple[str | None, str | None]) -> dict:
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    use_curve(req, *keys)
    req.connect(endpoint)
    try:
        req.send_json({"v": 1, "op": "status"})
        if not req.poll(5000):
            raise SystemExit(f"no answer from {endpoint}")
        return req.recv_json()
    finally:
        req.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", required=True, help="facegate's [zmq] events endpoint")
    ap.add_argument("--control", default=None, help="facegate's [zmq] control endpoint (prints status first)")
    ap.add_argument("--count", type=int, default=0, help="stop after this many events (0 = run until Ctrl-C)")
    ap.add_argument("--client-key", default=None, metavar="NAME.key_secret", help="this client's CURVE key pair (facegate zmq keygen)")
    ap.add_argument("--server-key", default=None, metavar="server.key", help="the daemon's CURVE public key")
    args = ap.parse_args()
    ctx = zmq.Context()
    if args.control:
        print(json.dumps(status(ctx, args.control, (args.client_key, args.server_key)), indent=1), flush=True)
    sub = ctx.socket(zmq.SUB)
    use_curve(sub, args.client_key, args.server_key)  # the events socket is CURVE-protected too
    sub.setsockopt(zmq.SUBSCRIBE, b"decision")
    sub.setsockopt(zmq.SUBSCRIBE, b"door")
    sub.connect(args.events)
    seen = 0
    try:
        while not args.count or seen < args.count:
            topic, body = sub.recv_multipart()
            event = json.loads(body)
            seen += 1
            if topic == b"decision":
                # The uid, unless the daemon's [privacy] show_names lets the name out too.
                who = event.get("person") or event.get("person_uid") or "-"
                print(f"{event['camera']}: {event['decision']:<7} {who:<20} ({event['reason']}, {event['latency_ms']:.0f} ms)"
                      + (f" door {event['door']}" if event.get("door") else ""), flush=True)
            else:
                alarm = " ALARM" if event["event"] in ("forced", "held_open", "unhealthy") else ""
                print(f"door {event['door']}: {event['event']}{alarm} {json.dumps({k: v for k, v in event.items() if k not in ('v', 'type', 'door', 'event')})}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close(0)
        ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
