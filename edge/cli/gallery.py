"""`facegate gallery ...` and `facegate keys ...`: the device gallery from the command line."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path

from edge.access.credentials import card_id
from edge.cli.audit import record_event
from edge.config import Config
from edge.errors import FacegateError
from edge.gallery.enroll import enroll_photos
from edge.gallery.keys import KeySource, data_dir_for, load_key
from edge.gallery.loader import open_gallery
from edge.gallery.pins import hash_pin
from edge.gallery.search import Gallery
from edge.gallery.store import GALLERY_FILE, GalleryStore, PersonProfile
from edge.names import check_names
from edge.perception.faces import Perception
from edge.perception.imageio import load_image
from edge.perception.photos import person_folders

Handler = Callable[[argparse.Namespace, Config], int]


def _warn(message: str) -> None:
    print(f"facegate: warning: {message}", file=sys.stderr)


def _store(args: argparse.Namespace, cfg: Config) -> GalleryStore:
    """The encrypted store alone (no models, no index): for commands that never search."""
    data_dir = data_dir_for(args.data_dir, cfg)
    return GalleryStore.open(data_dir, load_key(data_dir, cfg, create=False).kek)


def _open(args: argparse.Namespace, cfg: Config, perception: Perception, create: bool) -> Gallery:
    return open_gallery(args.data_dir, cfg, perception.store, create, _warn)


def _progress(done: int, total: int, rejected: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    print(f"\r[{bar}] {done}/{total} people, {rejected} photo(s) rejected", end="", file=sys.stderr, flush=True)


def cmd_enroll(args: argparse.Namespace, cfg: Config) -> int:
    if bool(args.person) == bool(args.from_dir):
        raise FacegateError("gallery enroll: give either --person NAME IMAGE... or --from-dir DIR")
    if args.person and not args.images:
        raise FacegateError("gallery enroll: --person needs at least one IMAGE")
    if (args.card or args.pin_stdin) and not args.person:
        raise FacegateError("gallery enroll: --card and --pin-stdin need --person (one person's credentials)")
    jobs = [(args.person, list(args.images))] if args.person else list(person_folders(args.from_dir))
    check_names((name for name, _ in jobs), "gallery enroll")  # before a PIN is asked, a model loads or anyone is enrolled
    credentials = {"cards": tuple(args.card or ()), "pin_hash": hash_pin(_read_pin()) if args.pin_stdin else ""}
    perception = Perception(cfg)
    report: list[dict[str, object]] = []
    rejected = 0
    with _open(args, cfg, perception, create=True) as gallery:
        for done, (name, photos) in enumerate(jobs, 1):
            profile = PersonProfile(name=name, groups=tuple(args.group or ()), **credentials)
            record, results = enroll_photos(gallery, perception, profile, photos)
            rejected += sum(not r.accepted for r in results)
            if record is not None:
                record_event(data_dir_for(args.data_dir, cfg), "enroll", {"person_uid": record.uid, "templates": record.n_templates, "by": "cli"})
            report.append(
                {
                    "person": name,
                    "photos": [r.to_dict() for r in results],
                    "enrolled": record is not None,
                    "templates": record.n_templates if record is not None else 0,
                }
            )
            if args.from_dir and not args.json:
                _progress(done, len(jobs), rejected)
    if args.from_dir and not args.json:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    else:
        for entry in report:
            status = f"enrolled, {entry['templates']} template(s)" if entry["enrolled"] else "NOT enrolled"
            print(f"{entry['person']}: {status}")
            for photo in entry["photos"]:  # type: ignore[union-attr]
                if not photo["accepted"]:
                    print(f"  rejected {photo['file']}: {photo['reason']}")
    return 0 if all(e["enrolled"] for e in report) else 1


def card_arg(text: str) -> int:
    """`FACILITY:NUMBER` (what a card's print or a Wiegand frame says) or the combined card id."""
    try:
        facility, _, number = text.rpartition(":")
        value = card_id(int(facility), int(number)) if facility else int(number)
        if facility and not (0 <= int(facility) < 2**16 and 0 <= int(number) < 2**16):
            raise ValueError(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a card is FACILITY:NUMBER (each 0-65535) or one number") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r}: a card id is below 2**32")
    return value


def _read_pin() -> str:
    """The PIN from a prompt (no echo) on a terminal, else stdin's first line: never argv, which
    other users see in `ps` and the shell keeps in its history."""
    return (getpass.getpass("PIN: ") if sys.stdin.isatty() else sys.stdin.readline()).strip()


def cmd_list(args: argparse.Namespace, cfg: Config) -> int:
    with _store(args, cfg) as store:
        rows = [
            # The uid is what decisions, the audit and the hub name a person by ([privacy] show_names).
            {"person": p.profile.name, "uid": p.uid, "groups": list(p.profile.groups), "templates": p.n_templates, "created": p.created,
             # A card number is a credential: counted, listed only when asked (next to the name).
             "cards": [f"{c >> 16}:{c & 0xFFFF}" for c in p.profile.cards] if args.cards else len(p.profile.cards),
             "pin": bool(p.profile.pin_hash)}
            for p in store.persons()
        ]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in sorted(rows, key=lambda r: str(r["person"]).casefold()):
            groups = ",".join(r["groups"]) or "-"  # type: ignore[arg-type]
            print(f"{r['person']:<32} {r['uid']}  {r['templates']:>3} template(s)  groups: {groups}")
        print(f"{len(rows)} people", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace, cfg: Config) -> int:
    with _store(args, cfg) as store:
        found = store.find(args.person)
        removed = store.remove(args.person)
    if not removed or found is None:
        print(f"facegate: no person named {args.person!r} in the gallery", file=sys.stderr)
        return 1
    record_event(data_dir_for(args.data_dir, cfg), "remove", {"person_uid": found.uid, "by": "cli"})
    print(f"{args.person}: erased (data key destroyed, rows deleted, WAL checkpointed)")
    return 0


def _faces_json(gallery: Gallery, perception: Perception, image_path: Path, verify: str | None) -> dict[str, object]:
    # The answer is about the main face: the largest one that passes the quality gate (the
    # largest of all when none does); every face is listed under "faces".
    faces = sorted(perception.faces(load_image(image_path)), key=lambda f: not f.quality.ok)
    results = []
    for face in faces:
        match = gallery.verify(verify, face.embedding) if verify else gallery.identify(face.embedding)  # type: ignore[arg-type]
        results.append({"box": [round(v, 1) for v in face.detection.box], "quality": face.quality.to_dict(), **match.to_dict()})
    top: dict[str, object] = dict(results[0]) if results else {"person": None, "score": None, "threshold": gallery.threshold, "candidates": []}
    top.pop("quality", None)
    return {"file": str(image_path), **top, "faces": results}


def cmd_identify(args: argparse.Namespace, cfg: Config) -> int:
    """Many images, one model load and one gallery open; an unreadable image is reported in its
    own entry (`error`) and the others still answered."""
    perception = Perception(cfg)
    results: list[dict[str, object]] = []
    with _open(args, cfg, perception, create=False) as gallery:
        for image in args.image:
            try:
                results.append(_faces_json(gallery, perception, image, None))
            except FacegateError as exc:
                results.append({"file": str(image), "error": str(exc)})
    failed = any("error" in r for r in results)
    if args.json:
        # One image: its object (as always); several: a list, one object per image, in order.
        print(json.dumps(results[0] if len(results) == 1 else results))
    else:
        for r in results:
            who = r.get("error") or f"{r['person'] or 'unknown'} (score {r['score']}, threshold {r['threshold']})"
            print(f"{r['file']}: {who}")
    return 1 if failed else 0


def cmd_verify(args: argparse.Namespace, cfg: Config) -> int:
    perception = Perception(cfg)
    with _open(args, cfg, perception, create=False) as gallery:
        if gallery.store.find(args.person) is None:
            raise FacegateError(f"gallery verify: no person named {args.person!r} in the gallery")
        result = _faces_json(gallery, perception, args.image, args.person)
    result["match"] = result["person"] is not None
    print(json.dumps(result) if args.json else f"{args.image}: {'MATCH' if result['match'] else 'no match'} "
          f"(score {result['score']}, threshold {result['threshold']})")
    return 0 if result["match"] else 1


def cmd_keys(args: argparse.Namespace, cfg: Config) -> int:
    data_dir = data_dir_for(args.data_dir, cfg)
    if args.keys_command == "init":
        if (data_dir / GALLERY_FILE).exists():
            raise FacegateError(f"keys init: {data_dir} already holds a gallery; use `facegate keys rotate`")
        key = load_key(data_dir, cfg, create=True, warn=_warn)
        GalleryStore.open(data_dir, key.kek, create=True).close()
        status = _status(data_dir, key)
        record_event(data_dir, "key", {"action": "init", "kek_id": status["kek_id"], "device_key_version": status["device_key_version"]})
        print(json.dumps(status))
        return 0
    key = load_key(data_dir, cfg, create=False)
    if args.keys_command == "rotate":
        from edge.gallery.keys import rotate_keys

        rotate_keys(data_dir, key, rotate_kek=args.kek, warn=_warn)
        key = load_key(data_dir, cfg, create=False)
    status = _status(data_dir, key)
    if args.keys_command == "rotate":
        record_event(data_dir, "key", {"action": "rotate_kek" if args.kek else "rotate", "kek_id": status["kek_id"], "device_key_version": status["device_key_version"]})
    print(json.dumps(status, indent=2))
    return 0


def _status(data_dir: Path, key: KeySource) -> dict[str, object]:
    with GalleryStore.open(data_dir, key.kek) as store:
        return {"data_dir": str(data_dir), "key_source": key.origin, **store.status()}


def add_commands(sub: argparse._SubParsersAction, run: Callable[[Handler], Callable[[argparse.Namespace], int]]) -> None:
    """Registers `gallery` and `keys`; `run(handler)` wraps a handler with config loading."""
    gallery = sub.add_parser("gallery", help="the encrypted on-device gallery").add_subparsers(dest="gallery_command", required=True)

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--data-dir", type=Path, default=None, help="gallery directory (see [gallery] data_dir)")
        p.add_argument("--json", action="store_true")
        return p

    p = common(gallery.add_parser("enroll", help="enroll a person from photos, or every person of a folder tree"))
    p.add_argument("--person", default=None, help="display name")
    p.add_argument("--group", action="append", help="access group (repeatable)")
    p.add_argument("--from-dir", type=Path, default=None, help="DIR/<Name>/*.jpg, one person per folder")
    p.add_argument("--card", action="append", type=card_arg, help="card FACILITY:NUMBER (or the combined number); repeatable")
    p.add_argument("--pin-stdin", action="store_true", help="read the person's PIN (4-12 digits) from stdin, or a prompt on a terminal")
    p.add_argument("images", nargs="*", type=Path)
    p.set_defaults(func=run(cmd_enroll))
    p = common(gallery.add_parser("list", help="people in the gallery"))
    p.add_argument("--cards", action="store_true", help="list each person's card numbers (credentials), not only how many")
    p.set_defaults(func=run(cmd_list))
    p = common(gallery.add_parser("remove", help="erase a person for good (crypto-erase)"))
    p.add_argument("--person", required=True)
    p.set_defaults(func=run(cmd_remove))
    p = common(gallery.add_parser("identify", help="who is in these photos (1:N, open set)"))
    p.add_argument("image", type=Path, nargs="+")
    p.set_defaults(func=run(cmd_identify))
    p = common(gallery.add_parser("verify", help="is this photo PERSON (1:1)"))
    p.add_argument("--person", required=True)
    p.add_argument("image", type=Path)
    p.set_defaults(func=run(cmd_verify))
    from edge.cli.negatives import add_commands as add_negative_commands

    add_negative_commands(gallery, run, common)  # reject-match, negatives, status

    keys = sub.add_parser("keys", help="gallery encryption keys")
    keys.add_argument("keys_command", choices=("init", "rotate", "status"))
    keys.add_argument("--data-dir", type=Path, default=None)
    keys.add_argument("--kek", action="store_true", help="rotate: also replace the key-encryption key file")
    keys.set_defaults(func=run(cmd_keys))
