"""What the package promises about keys and crashes, read from the files it installs (the .deb
build itself is tests/packaging/test_deb.py): the KEK file is root's, the service gets it as a
credential, no unit leaves a core dump, and a reload cannot stop the daemon."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POSTINST = (REPO / "packaging" / "debian" / "postinst").read_text()


def directives(unit: str, name: str) -> list[str]:
    text = (REPO / "systemd" / unit).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{name}=")]


def test_postinst_keeps_the_key_file_root_only() -> None:
    assert "chown root:root /etc/facegate/kek.key" in POSTINST and "chmod 0600 /etc/facegate/kek.key" in POSTINST
    # The last word on the key's owner is root's, also on upgrade from a package that gave it away.
    owners = re.findall(r"^\s*chown\s+(\S+)\s+/etc/facegate/kek\.key\s*$", POSTINST, re.M)
    assert owners == ["root:root"]


def test_the_service_gets_the_packaged_key_file_as_a_credential() -> None:
    build = (REPO / "packaging" / "build_deb.sh").read_text()
    assert 'key_file = "/etc/facegate/kek.key"' in build  # the packaged config's [gallery] key_file
    assert directives("facegate.service", "LoadCredential") == ["facegate-kek:/etc/facegate/kek.key"]


@pytest.mark.parametrize("unit", ["facegate.service", "facegate-hub.service"])
def test_no_unit_leaves_a_core_dump(unit: str) -> None:
    assert directives(unit, "LimitCORE") == ["0"]


def test_a_reload_checks_the_file_before_signalling_and_start_still_refuses_a_bad_one() -> None:
    check = "/opt/facegate/bin/facegate --config /etc/facegate/config.toml config check"
    assert directives("facegate.service", "ExecStartPre") == [check]
    # A failed ExecReload= leaves the service running; only a file that passed reaches the daemon.
    assert directives("facegate.service", "ExecReload") == [check, "/bin/kill -HUP $MAINPID"]
