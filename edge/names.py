"""A person's display name: the one check every way a name comes in goes through.

Names enter from `facegate gallery enroll`, the kiosk's `enroll` on the ZeroMQ control socket,
the hub's `admin person add` and review (`--name`), device uploads the hub opens and hub bundles
a device applies. All of them build a `PersonProfile` (edge/gallery/records.py), which calls
`check_person_name`; the kiosk and the CLIs may call it first to answer with a clear error
before any work is done. The bundle / upload schema (sync/bundle.py) bounds the wire form by
the same `MAX_NAME_CHARS`, so a name a device accepts is a name the hub accepts: an enrollment
the hub would refuse is refused on the device, instead of sitting in the outbox resent forever.

This module is shared vocabulary (edge and sync import it, so do the outputs): it imports
nothing but the standard library and edge.errors.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from edge.errors import PersonNameError

MAX_NAME_CHARS = 128  # code points, after NFC; the hub's schema uses the same constant

# Zero-width non-joiner / joiner (category Cf) are part of how Persian, Arabic and Indic names
# are spelled; they neither reorder text nor break a line, so they are allowed.
_JOINERS = frozenset("\u200c\u200d")
# Line and paragraph separators are category Z, not C, but start a new line in log viewers.
_LINE_BREAKS = frozenset("\u2028\u2029")


def check_person_name(name: object) -> str:
    """`name` as it is stored and shown: NFC, stripped of surrounding whitespace.

    PersonNameError when it is not a string, is empty, is longer than MAX_NAME_CHARS, or holds a
    control or format character (Unicode category C*: newlines, tabs, escapes, bidi overrides
    U+202A–U+202E and isolates U+2066–U+2069, unassigned and private-use code points) or a line
    separator. The message names the code point and its position, never the name itself: it
    may reach a log or a kiosk screen."""
    if not isinstance(name, str):
        raise PersonNameError(f"person name: must be a string (got {type(name).__name__})")
    clean = unicodedata.normalize("NFC", name).strip()
    if not clean:
        raise PersonNameError("person name: must not be empty")
    if len(clean) > MAX_NAME_CHARS:
        raise PersonNameError(f"person name: must be at most {MAX_NAME_CHARS} characters (got {len(clean)})")
    for i, ch in enumerate(clean):
        if _refused(ch):
            what = unicodedata.name(ch, unicodedata.category(ch))
            raise PersonNameError(f"person name: character {i + 1} is U+{ord(ch):04X} ({what}); control and format characters are not allowed")
    return clean


def check_names(names: Iterable[str], where: str) -> None:
    """Every name of a batch checked before any of it is enrolled (`--from-dir`): one
    PersonNameError listing each bad one, shown with repr() so that what is wrong is visible
    on the operator's terminal without being acted on by it."""
    problems = []
    for name in names:
        try:
            check_person_name(name)
        except PersonNameError as exc:
            problems.append(f"{name!r}: {exc}")
    if problems:
        raise PersonNameError(f"{where}: {len(problems)} name(s) refused, nothing enrolled" + "".join(f"\n  {p}" for p in problems))


def stored_name(name: str) -> str:
    """A name read back from a store that may predate `check_person_name` (a device gallery, the
    hub's persons): each refused character becomes U+FFFD and the name is cut to MAX_NAME_CHARS.
    An old record still opens — a door does not stop over a display name — yet shows nothing
    that could break a log line, and goes to the hub within its limit. A name that passes the
    check comes back unchanged."""
    try:
        return check_person_name(name)
    except PersonNameError:
        pass
    text = unicodedata.normalize("NFC", name if isinstance(name, str) else str(name)).strip()
    safe = "".join("\ufffd" if _refused(ch) else ch for ch in text)
    return check_person_name(safe[:MAX_NAME_CHARS] or "\ufffd")


def _refused(ch: str) -> bool:
    return (unicodedata.category(ch).startswith("C") and ch not in _JOINERS) or ch in _LINE_BREAKS
