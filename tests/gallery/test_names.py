"""Display names (edge/names.py): one check, wherever a name comes in."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

import sync.hub.store
from bench.harness.sync_helpers import person
from edge.errors import GalleryError, PersonNameError
from edge.gallery.records import PersonProfile, profile_from_bytes, profile_to_bytes
from edge.names import MAX_NAME_CHARS, check_person_name, stored_name
from sync import protocol
from sync.bundle import PERSON, person_doc, person_from_doc
from sync.hub.store import HubStore

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo" / "gallery"


@pytest.mark.parametrize(
    "name",
    ["Ada\nLovelace", "Ada\rLovelace", "Ada\tLovelace", "Ada\x1b[31mLovelace", "Ada\x00", "Ada\x85Lovelace", "Ada\u2028Lovelace",
     "Ada\u2029x", "\u202eecalevol adA", "Ada\u202a", "Ada\u202b", "Ada\u202c", "Ada\u202d", "Ada\u2066x", "Ada\u2067x", "Ada\u2068x",
     "Ada\u2069", "Ada\u200bLovelace", "Ada\ufeff", "Ada\ue000", "Ada\U000e0041", "Ada\ud800"],
)
def test_control_format_and_bidi_characters_are_refused(name: str) -> None:
    with pytest.raises(PersonNameError, match=r"U\+[0-9A-F]{4}"):
        check_person_name(name)


def test_the_error_names_the_code_point_and_not_the_name() -> None:
    with pytest.raises(PersonNameError) as err:
        check_person_name("Secret\u202eName")
    assert "U+202E" in str(err.value) and "character 7" in str(err.value)
    assert "Secret" not in str(err.value)


def test_names_are_nfc_and_stripped() -> None:
    decomposed = "Zoe\u0301 Ame\u0301lie"
    assert check_person_name(f"  {decomposed}\n") == unicodedata.normalize("NFC", decomposed)
    assert check_person_name("  Ada Lovelace ") == "Ada Lovelace"


def test_persian_and_indic_joiners_are_allowed() -> None:
    assert check_person_name("\u0645\u06cc\u200c\u0634\u0648\u062f") == "\u0645\u06cc\u200c\u0634\u0648\u062f"
    assert check_person_name("\u0915\u094d\u200d\u0937") == "\u0915\u094d\u200d\u0937"


@pytest.mark.parametrize("name", ["", "   ", "\n\t"])
def test_an_empty_name_is_refused(name: str) -> None:
    with pytest.raises(PersonNameError, match="must not be empty"):
        check_person_name(name)


def test_a_name_is_at_most_max_name_chars_after_nfc() -> None:
    assert check_person_name("a" * MAX_NAME_CHARS) == "a" * MAX_NAME_CHARS
    with pytest.raises(PersonNameError, match=f"at most {MAX_NAME_CHARS} characters"):
        check_person_name("a" * (MAX_NAME_CHARS + 1))
    # 2 code points each before NFC, 1 after: the limit counts what is stored.
    assert len(check_person_name("e\u0301" * MAX_NAME_CHARS)) == MAX_NAME_CHARS


def test_a_name_must_be_a_string() -> None:
    with pytest.raises(PersonNameError, match="must be a string"):
        check_person_name(42)


def test_a_profile_holds_the_checked_name_and_refuses_a_bad_one() -> None:
    assert PersonProfile(name=" Zoe\u0301 ").name == "Zo\u00e9"
    with pytest.raises(PersonNameError):
        PersonProfile(name="Ada\nLovelace")
    # The kiosk's enrollment answers GalleryError as `invalid_profile`: a name error is one.
    assert issubclass(PersonNameError, GalleryError)


def test_the_wire_schema_bounds_the_name_by_the_same_limit() -> None:
    doc = {"uid": "0" * 32, "model": "m", "templates": [], "qualities": [],
           "profile": {"name": "a" * MAX_NAME_CHARS, "groups": [], "consent": True, "consent_at": None, "consent_text": "",
                       "retention_days": None, "valid_from": None, "valid_until": None, "created_by": ""}}
    PERSON(doc, "person")
    doc["profile"]["name"] = "a" * (MAX_NAME_CHARS + 1)
    with pytest.raises(protocol.SchemaError, match=f"at most {MAX_NAME_CHARS}"):
        PERSON(doc, "person")


def test_gallery_enroll_refuses_a_batch_with_a_bad_name_before_enrolling_anyone(tmp_path) -> None:
    folders = tmp_path / "people"
    for name in ("Ada Lovelace", "Eve\u202eevil", "b" * (MAX_NAME_CHARS + 1)):
        (folders / name).mkdir(parents=True)
        shutil.copy(DEMO / "Joe_Biden" / "biden.jpg", folders / name / "1.jpg")
    data = tmp_path / "g"
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "gallery", "enroll", "--data-dir", str(data), "--from-dir", str(folders)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "2 name(s) refused, nothing enrolled" in proc.stderr and "U+202E" in proc.stderr and f"at most {MAX_NAME_CHARS}" in proc.stderr
    assert "\u202e" not in proc.stderr  # shown escaped, never acted on by the terminal
    assert not (data / "gallery.db").exists()


@pytest.mark.parametrize("name", ["Ada\nLovelace", "\u202eAda", "a" * (MAX_NAME_CHARS + 1)])
def test_a_bundle_or_upload_person_with_a_bad_name_is_refused_as_a_schema_error(name: str) -> None:
    doc = person_doc(person(1))
    doc["profile"]["name"] = name
    with pytest.raises(protocol.SchemaError):
        PERSON(doc, "upserts[0]")
        person_from_doc(doc, "upserts[0]")


@pytest.mark.parametrize(
    ("old", "shown"),
    [("Ada Lovelace", "Ada Lovelace"), ("Ada\nLovelace", "Ada\ufffdLovelace"), ("\u202eAda", "\ufffdAda"), ("\x1b", "\ufffd"),
     ("c" * 300, "c" * MAX_NAME_CHARS)],
)
def test_a_profile_sealed_before_names_were_checked_still_opens_made_safe(old: str, shown: str) -> None:
    # What an older facegate wrote: the same JSON, with a name today's check refuses.
    raw = profile_to_bytes(PersonProfile(name="placeholder")).replace(b'"placeholder"', json.dumps(old).encode())
    assert profile_from_bytes(raw).name == shown
    assert stored_name(old) == shown


def test_a_hub_person_sealed_before_names_were_checked_still_opens_within_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = HubStore.open("", tmp_path / "hub", secrets.token_bytes(32))
    legacy = person(7)
    old_doc = sync.hub.store.person_doc

    def as_an_older_hub_sealed_it(p: object) -> dict:
        doc = old_doc(p)
        doc["profile"]["name"] = "d" * 300 + "\n"  # the schema allowed 1,024 characters, and newlines
        return doc

    monkeypatch.setattr(sync.hub.store, "person_doc", as_an_older_hub_sealed_it)
    store.add_person(legacy)
    monkeypatch.undo()
    (opened,) = store.persons()
    assert opened.uid == legacy.uid and opened.profile.name == "d" * MAX_NAME_CHARS
    PERSON(person_doc(opened), "upserts[0]")  # what goes out in a bundle passes the devices' schema


def test_admin_person_add_refuses_a_bad_name_before_touching_the_hub(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(DEMO / "Joe_Biden" / "biden.jpg", photos / "1.jpg")
    config = tmp_path / "config.toml"
    config.write_text(f'[hub]\ndata_dir = "{tmp_path / "hub"}"\n')
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(config), "admin", "person", "add", "Eve\u202eevil", "--photos", str(photos)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in proc.stderr and "\u202e" not in proc.stderr
    assert not (tmp_path / "hub").exists()
