"""A kiosk: "who is in front of the camera?", and enrollment when a stranger agrees to it.

    python examples/kiosk_client.py --control tcp://127.0.0.1:7701 --camera kiosk [--enroll-as NAME]
    python examples/kiosk_client.py --control tcp://device:7701 --client-key kiosk1.key_secret --server-key server.key

Uses only the public ZeroMQ API (docs/door.md): one REQ socket, JSON requests. `identify`
answers with the person in front of the camera, or — for a face nobody in the gallery matches —
a `request_id`. With `--enroll-as`, the kiosk asks for consent on the terminal and, if given,
turns that request into a new person; the next `identify` answers with their name. With
`--withdraw`, the person in front is asked to confirm, then erased (`withdraw`: this client must be
in the daemon's `[zmq] withdraw_clients`, over CURVE).
"""

from __future__ import annotations

import argparse
import sys

import zmq
import zmq.auth

CONSENT_TEXT = "I agree that this kiosk stores my face template to recognise me on later visits."


def use_curve(sock: zmq.Socket, client_key: str | None, server_key: str | None) -> None:
    """CURVE when the daemon has it on ([zmq] curve_secret_key_file): this client's key pair (its
    public key allowed with `facegate zmq allow`) and the daemon's public key."""
    if not (client_key or server_key):
        return
    if not (client_key and server_key):
        raise SystemExit("CURVE needs both --client-key and --server-key")
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(client_key)
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]


class Kiosk:
    def __init__(self, endpoint: str, client_key: str | None = None, server_key: str | None = None) -> None:
        self.ctx = zmq.Context()
        self.endpoint, self.keys = endpoint, (client_key, server_key)
        self.sock = self._connect()

    def _connect(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        use_curve(sock, *self.keys)
        sock.connect(self.endpoint)
        return sock

    def call(self, op: str, **fields: object) -> dict:
        self.sock.send_json({"v": 1, "op": op, **fields})
        if not self.sock.poll(15000):
            # A REQ socket that lost its reply is stuck; start a fresh one.
            self.sock.close()
            self.sock = self._connect()
            raise SystemExit(f"no answer from {self.endpoint}")
        reply = self.sock.recv_json()
        if not reply["ok"]:
            raise SystemExit(f"{op}: {reply['error']['code']}: {reply['error']['message']}")
        return reply

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def withdraw(kiosk: Kiosk, where: dict[str, str], yes: bool) -> int:
    """Consent withdrawal: the kiosk names who it sees, the person confirms, the token erases them."""
    asked = kiosk.call("withdraw", wait_ms=5000, **where)  # a refusal (not_allowed, not_identified) exits with its code
    if not (yes or input(f"Erase everything this kiosk holds about {asked['person']}? [y/N] ").strip().lower() == "y"):
        print("nothing erased")
        return 0
    kiosk.call("withdraw", token=asked["token"], confirm=True)
    print(f"erased {asked['person']} ({asked['person_uid']})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--control", required=True, help="facegate's [zmq] control endpoint")
    ap.add_argument("--camera", default=None, help="camera name (optional with one camera)")
    ap.add_argument("--enroll-as", default=None, metavar="NAME", help="offer enrollment to an unknown face under this name")
    ap.add_argument("--withdraw", action="store_true", help="erase the recognised person in front, after their confirmation")
    ap.add_argument("--yes", action="store_true", help="the person has already agreed (no terminal prompt)")
    ap.add_argument("--client-key", default=None, metavar="NAME.key_secret", help="this client's CURVE key pair (facegate zmq keygen)")
    ap.add_argument("--server-key", default=None, metavar="server.key", help="the daemon's CURVE public key")
    args = ap.parse_args()
    kiosk = Kiosk(args.control, args.client_key, args.server_key)
    where = {"camera": args.camera} if args.camera else {}
    try:
        if args.withdraw:
            return withdraw(kiosk, where, args.yes)
        answer = kiosk.call("identify", wait_ms=5000, **where)
        print(f"{answer['camera']}: {answer['status']}" + (f" — {answer['person']}" if answer.get("person") else ""), flush=True)
        if answer["status"] != "unknown" or not args.enroll_as:
            return 0
        agreed = args.yes or input(f"{CONSENT_TEXT} [y/N] ").strip().lower() == "y"
        if not agreed:
            print("not enrolled: no consent")
            return 0
        enrolled = kiosk.call("enroll", request_id=answer["request_id"], name=args.enroll_as, consent=True,
                              consent_text=CONSENT_TEXT)
        print(f"enrolled {enrolled['person']} ({enrolled['templates']} templates)")
        again = kiosk.call("identify", **where)
        print(f"{again['camera']}: {again['status']} — {again.get('person')}")
    finally:
        kiosk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
