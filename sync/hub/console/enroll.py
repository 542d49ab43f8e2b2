"""Enrollment from photos uploaded to the console: the hub's `admin person add` path, per upload.

Each photo is checked before it is decoded: not empty, within the per-photo bound, and a header
`edge.perception.imageheader` recognises (JPEG, PNG, WebP, BMP, PNM, TIFF) declaring a sane size.
It then goes through `photo_template`, the same verdict the CLI prints (one dominant face,
every quality gate), from a private temporary directory removed at once. The accepted photos'
templates make one `SyncPerson`, stored sealed like every hub person (`HubStore.add_person`).
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import FacegateError
from edge.gallery.changes import SyncPerson
from edge.gallery.records import PersonProfile, new_uid
from edge.perception.imageheader import read_header
from edge.perception.photos import photo_template

MAX_PHOTOS = 20
MAX_PHOTO_BYTES = 10_000_000
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WebP": ".webp", "BMP": ".bmp", "PNM": ".ppm", "TIFF": ".tif"}


@dataclass(frozen=True, slots=True)
class Verdict:
    file: str
    accepted: bool
    reason: str
    quality: float | None


@dataclass(frozen=True, slots=True)
class EnrollResult:
    uid: str | None
    error: str
    photos: tuple[Verdict, ...]


def parse_day(text: str, field: str, end: bool = False) -> int | None:
    """'' → None; 'YYYY-MM-DD' → unix seconds at the day's start (or its end, for validity's last day)."""
    if not text.strip():
        return None
    try:
        day = datetime.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise FacegateError(f"{field}: a date as YYYY-MM-DD (got {text[:40]!r})") from exc
    moment = datetime.datetime.combine(day, datetime.time.max if end else datetime.time.min)
    return int(moment.timestamp())


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.strip() for g in text.split(",") if g.strip()))


def parse_cards(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in parse_list(text))
    except ValueError as exc:
        raise FacegateError(f"cards: card numbers separated by commas (got {text[:60]!r})") from exc


def _verdict(perception: Callable[[], Any], name: str, data: bytes, folder: Path, index: int):
    if not data:
        return Verdict(name, False, "empty file", None), None
    if len(data) > MAX_PHOTO_BYTES:
        return Verdict(name, False, f"larger than {MAX_PHOTO_BYTES // 1_000_000} MB", None), None
    try:
        header = read_header(data, name)
    except FacegateError as exc:
        return Verdict(name, False, str(exc), None), None
    path = folder / f"{index:02d}{_SUFFIX[header.format]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    try:
        result = photo_template(perception(), path)  # models load at the first photo that could be a face
    finally:
        path.unlink()
    return Verdict(name, result.accepted, result.reason, None if result.quality is None else round(result.quality, 3)), result


def enroll(store, perception: Callable[[], Any], model: str, name: str, photos: list[tuple[str, bytes]], profile: dict, by: str) -> EnrollResult:
    """Checks every photo (`perception()` gives the face models), then adds the person from the accepted ones (none: nothing added)."""
    if not photos:
        return EnrollResult(None, "no photo uploaded", ())
    if len(photos) > MAX_PHOTOS:
        return EnrollResult(None, f"at most {MAX_PHOTOS} photos per enrollment", ())
    verdicts, good = [], []
    with tempfile.TemporaryDirectory(prefix="facegate-enroll-") as tmp:
        for i, (file_name, data) in enumerate(photos):
            verdict, result = _verdict(perception, file_name[:120] or f"photo {i + 1}", data, Path(tmp), i)
            verdicts.append(verdict)
            if result is not None and result.accepted and result.embedding is not None:
                good.append(result)
    if not good:
        return EnrollResult(None, "no usable photo", tuple(verdicts))
    try:
        person = SyncPerson(new_uid(), PersonProfile(name=name, consent_at=int(time.time()), created_by=by, **profile),
                            model, tuple(r.embedding for r in good), tuple(r.quality or 0.0 for r in good))
        store.add_person(person)
    except FacegateError as exc:
        return EnrollResult(None, str(exc), tuple(verdicts))
    return EnrollResult(person.uid, "", tuple(verdicts))
