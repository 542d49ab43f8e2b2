"""Key files and sealing primitives (edge/gallery/crypto.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.errors import CryptoError, KeyfileError
from edge.gallery.crypto import (
    KEY_BYTES,
    aad,
    generate_kek_file,
    kek_id,
    new_key,
    read_kek_file,
    seal,
    unseal,
)


def test_generated_key_file_is_private_hex_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    kek = generate_kek_file(path)
    assert len(kek) == KEY_BYTES
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_text() == kek.hex() + "\n"
    assert read_kek_file(path) == kek
    assert [p.name for p in tmp_path.iterdir()] == ["kek.key"]  # no temporary file left behind


def test_generating_over_an_existing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    kek = generate_kek_file(path)
    with pytest.raises(KeyfileError, match="already exists"):
        generate_kek_file(path)
    assert read_kek_file(path) == kek


def test_raw_32_byte_key_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "raw.key"
    kek = new_key()
    path.write_bytes(kek)
    path.chmod(0o600)
    assert read_kek_file(path) == kek


@pytest.mark.parametrize("content", [b"", b"abc", b"zz" * 32, os.urandom(31), os.urandom(33)])
def test_malformed_key_file_names_the_expected_format(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyfileError, match="32 raw bytes or 64 hex"):
        read_kek_file(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_open_to_group_or_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "kek.key"
    generate_kek_file(path)
    path.chmod(mode)
    with pytest.raises(KeyfileError) as err:
        read_kek_file(path)
    assert str(path) in str(err.value) and f"chmod 600 {path}" in str(err.value)


def test_missing_key_file_is_a_keyfile_error(tmp_path: Path) -> None:
    with pytest.raises(KeyfileError, match="not found"):
        read_kek_file(tmp_path / "nope.key")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    generate_kek_file(path)
    os.chown(path, 4242, -1)
    with pytest.raises(KeyfileError, match="owned by uid 4242"):
        read_kek_file(path)


def test_systemd_credential_is_read_as_systemd_leaves_it(tmp_path: Path, monkeypatch) -> None:
    # systemd: owner root, mode 0400 plus a read ACL for the unit's user, which shows as 0440
    credentials, elsewhere = tmp_path / "credentials", tmp_path / "elsewhere"
    credentials.mkdir()
    elsewhere.mkdir()
    kek = new_key()
    for folder in (credentials, elsewhere):
        (folder / "facegate-kek").write_bytes(kek)
        (folder / "facegate-kek").chmod(0o440)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert read_kek_file(credentials / "facegate-kek") == kek
    with pytest.raises(KeyfileError, match="chmod 600"):
        read_kek_file(elsewhere / "facegate-kek")


def test_kek_id_is_a_stable_fingerprint_not_the_key() -> None:
    kek = bytes(range(32))
    assert kek_id(kek) == kek_id(bytes(kek)) and len(kek_id(kek)) == 16
    assert kek_id(kek) != kek_id(new_key())
    assert kek.hex()[:16] != kek_id(kek)


def test_sealed_bytes_only_open_under_the_same_aad() -> None:
    aead = AESGCM(new_key())
    sealed = seal(aead, b"template", aad("templates", "uid-1"))
    assert unseal(aead, sealed, aad("templates", "uid-1"), "t") == b"template"
    with pytest.raises(CryptoError, match="template 7 fails authentication"):
        unseal(aead, sealed, aad("templates", "uid-2"), "template 7")
    # length prefixes keep part boundaries: ("ab", "c") and ("a", "bc") are different AADs
    assert aad("ab", "c") != aad("a", "bc")
