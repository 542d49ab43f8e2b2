"""`facegate config check`: every bad key named with its reason, not just the first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edge.cli.config import check_config
from edge.config import load_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BAD = """
[embed]
model = "resnet9000"
flip = "yes"

[detect]
min_score = 1.5
max_fases = 3

[metrics]
address = "localhost:80"
port = 70000

[sync]
broker_host = "mqtt.local"

[[camera]]
name = "front"
fps = -1

[colour]
mode = "on"
"""


def facegate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli.main", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_every_bad_key_is_reported_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(BAD)
    result = facegate("config", "check", "--config", str(path))
    assert result.returncode == 1
    lines = [line.strip() for line in result.stderr.splitlines()]
    assert lines[0] == f"{path}: 11 problems"
    problems = lines[1:]
    assert sorted(problems) == sorted([
        "embed.model: must be one of edgeface_xs, edgeface_xxs, dlib_resnet (got 'resnet9000')",
        "embed.flip: must be bool (got str 'yes')",
        "detect.min_score: must be <= 1.0 (got 1.5)",
        "detect.max_fases: unknown key; valid keys: model, min_score, nms_iou, max_faces, refine_small",
        "metrics.address: must be an IP address such as 127.0.0.1 or :: (got 'localhost:80')",
        "metrics.port: must be <= 65535 (got 70000)",
        "sync.device_id: required when sync.broker_host is set",
        "sync.hub_sign_key_file: required when sync.broker_host is set (bundles must be verifiable)",
        "camera[front].fps: must be >= 0.0 (got -1)",
        "camera[front].source: required (a file, /dev/videoN, URL or folder)",
        "colour: unknown table; valid tables: " + ", ".join(f for f in load_config(None).__dataclass_fields__),
    ])
    # The daemon's loader refuses the file with the very same problems.
    try:
        load_config(path)
    except ConfigError as exc:
        assert list(exc.problems) == problems
    else:
        raise AssertionError("load_config accepted a bad file")


FIVE_MISTAKES = """
[detect]
min_scor = 0.4

[embed]
flip = "yes"
precision = "int4"

[quality]
min_brightness = 200.0
max_brightness = 100.0

[[camera]]
name = "front"
source = "/dev/video0"
fps = 500
"""


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(FIVE_MISTAKES)
    expected = [
        "detect.min_scor: unknown key; valid keys: model, min_score, nms_iou, max_faces, refine_small",
        "embed.flip: must be bool (got str 'yes')",
        "embed.precision: must be one of int8, fp32 (got 'int4')",
        "quality.min_brightness: must be below quality.max_brightness (got 200.0 and 100.0)",
        "camera[front].fps: must be <= 240.0 (got 500)",
    ]
    try:
        load_config(path)
    except ConfigError as exc:
        assert list(exc.problems) == expected
        assert str(exc).splitlines() == [f"{path}: 5 problems", *(f"  {p}" for p in expected)]
    else:
        raise AssertionError("load_config accepted a bad file")
    result = facegate("config", "check", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"{path}: 5 problems", *(f"  {p}" for p in expected)]


def test_rules_between_keys_and_files_named_are_checked_once_keys_are_valid(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[metrics]\naddress = "localhost"\n')
    assert check_config(path) == ["metrics.address: must be an IP address such as 127.0.0.1 or :: (got 'localhost')"]
    path.write_text('[[camera]]\nname = "door"\n')  # no source
    assert check_config(path) == ["camera[door].source: required (a file, /dev/videoN, URL or folder)"]
    path.write_text('[[camera]]\nname = "door"\nsource = "a.mp4"\n[[door]]\nname = "main"\ncamera = "door"\nosdp_scbk_file = "/nope.key"\n')
    assert check_config(path) == ["door[main].osdp_scbk_file: /nope.key: no such file"]
    missing = tmp_path / "nope.key"
    path.write_text(f'[gallery]\nkey_file = "{missing}"\n[liveness]\ncalibration = "{tmp_path}"\n')
    assert check_config(path) == [f"gallery.key_file: {missing}: no such file", f"liveness.calibration: {tmp_path}: no such file"]
    path.write_text("[embed\nmodel = 1\n")
    assert check_config(path)[0].startswith("not valid TOML")


def test_good_configs_pass(tmp_path: Path) -> None:
    result = facegate("config", "check", "--config", str(REPO / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{REPO / 'config.toml'}: OK"
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    # the global --config works as well
    result = facegate("--config", str(empty), "config", "check")
    assert result.returncode == 0 and result.stdout.strip() == f"{empty}: OK"
