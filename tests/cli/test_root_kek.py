"""The packaged key layout: the KEK file is root's (0600), the service reads systemd's copy
(`LoadCredential=facegate-kek:`), admin commands run as root and read the file itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable

REPO = Path(__file__).resolve().parents[2]
LMM = REPO / "assets" / "demo" / "gallery" / "Lin_Manuel_Miranda" / "lin-manuel-miranda.jpg"
NOBODY = 65534  # stands in for the `facegate` service user


@pytest.fixture
def layout() -> Iterator[Path]:
    """/etc/facegate and /var/lib/facegate as postinst leaves them: key root:root 0600, data the
    service user's."""
    if os.geteuid() != 0:
        unavailable("needs root: the layout has a root-owned key and a service user")
    root = Path(tempfile.mkdtemp(prefix="facegate-kek-"))  # not under pytest's root-only tmp
    try:
        root.chmod(0o755)
        (root / "etc").mkdir(mode=0o755)
        config = root / "etc" / "config.toml"
        config.write_text(f'[gallery]\ndata_dir = "{root / "data"}"\nkey_file = "{root / "etc" / "kek.key"}"\n')
        config.chmod(0o644)
        assert facegate(root, "keys", "init").returncode == 0
        for path in [root / "data", *(root / "data").iterdir()]:
            os.chown(path, NOBODY, NOBODY)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def facegate(root: Path, *args: str, user: int | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    who = {"user": user, "group": user, "extra_groups": []} if user is not None else {}
    return subprocess.run([sys.executable, "-m", "edge.cli.main", "--config", str(root / "etc" / "config.toml"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300, env={**os.environ, "HOME": str(root), **(env or {})}, **who)


def credential_dir(root: Path) -> Path:
    """What systemd makes for the unit: a private folder with a copy the service user may read."""
    folder = root / "credentials"
    folder.mkdir(mode=0o700)
    shutil.copyfile(root / "etc" / "kek.key", folder / "facegate-kek")
    (folder / "facegate-kek").chmod(0o400)
    for path in (folder, folder / "facegate-kek"):
        os.chown(path, NOBODY, NOBODY)
    return folder


def test_the_service_user_cannot_read_the_key_file_and_is_told_to_use_root(layout: Path) -> None:
    key = layout / "etc" / "kek.key"
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (0, 0o600)
    listed = facegate(layout, "gallery", "list", user=NOBODY)
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert "it is root's" in listed.stderr and "sudo facegate gallery" in listed.stderr, listed.stderr


def test_the_service_reads_the_credential_and_config_check_accepts_it(layout: Path) -> None:
    env = {"CREDENTIALS_DIRECTORY": str(credential_dir(layout))}
    assert facegate(layout, "gallery", "list", user=NOBODY, env=env).returncode == 0
    # ExecStartPre= / ExecReload= run the check as the service user, with the same credential.
    checked = facegate(layout, "config", "check", user=NOBODY, env=env)
    assert checked.returncode == 0, checked.stderr
    without = facegate(layout, "config", "check", user=NOBODY)
    assert without.returncode == 1 and "gallery.key_file" in without.stderr and "Permission denied" in without.stderr


def test_an_admin_command_as_root_leaves_the_data_to_the_service_user(layout: Path, model_store) -> None:
    enrolled = facegate(layout, "gallery", "enroll", "--person", "Lin Manuel Miranda", str(LMM))
    assert enrolled.returncode == 0, enrolled.stderr
    # SQLite gives the journal / WAL files the database's owner when root writes: the service
    # can still open everything.
    owners = {p.name: p.stat().st_uid for p in (layout / "data").iterdir()}
    assert set(owners.values()) == {NOBODY}, owners
    env = {"CREDENTIALS_DIRECTORY": str(credential_dir(layout))}
    listed = facegate(layout, "gallery", "list", user=NOBODY, env=env)
    assert listed.returncode == 0 and "Lin Manuel Miranda" in listed.stdout, listed.stderr
