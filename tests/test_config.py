from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import Config, config_from_dict, load_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_bundled_config_is_the_defaults() -> None:
    assert load_config(REPO / "config.toml") == Config()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"embed": {"model": "facenet"}}, "embed.model: must be one of edgeface_xs, edgeface_xxs, dlib_resnet (got 'facenet')"),
        ({"embedd": {}}, "embedd: unknown table"),
        ({"detect": {"min_scor": 0.4}}, "detect.min_scor: unknown key"),
        ({"detect": {"min_score": 1.5}}, "detect.min_score: must be <= 1.0"),
        ({"models": {"threads": 0}}, "models.threads: must be >= 1"),
        ({"embed": {"flip": "yes"}}, "embed.flip: must be bool"),
        ({"detect": {"max_faces": True}}, "detect.max_faces: must be int"),
        ({"quality": {"min_brightness": 200.0, "max_brightness": 100.0}}, "quality.min_brightness"),
        ({"embed": 3}, "embed: must be a table"),
    ],
)
def test_bad_config_names_the_key(data, message) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)


def test_unreadable_and_invalid_toml_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[embed\nmodel=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_cli_prints_config_errors_as_one_line(tmp_path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[embed]\nprecision = "int4"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "--config", str(bad), "embed", "x.jpg"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "embed.precision: must be one of int8, fp32" in proc.stderr
