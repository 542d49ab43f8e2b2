from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import Config, QualityConfig, SyncConfig, config_from_dict, load_config
from edge.errors import ConfigError
from edge.perception.registry import BACKENDS, DETECTORS, EMBEDDERS, LIVENESS_MODELS, PRECISIONS

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
        ({"zmq": {"control": "ipc:///tmp/c", "withdraw_clients": ["kiosk1"]}}, "zmq.withdraw_clients: needs CURVE"),
        ({"zmq": {"withdraw_clients": ["../etc/key"]}}, "zmq.withdraw_clients: '../etc/key' is not a key name"),
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


def test_a_file_with_several_problems_raises_one_error_listing_them(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[detect]\nmin_score = 2.0\n[embed]\nflip = "yes"\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == ("detect.min_score: must be <= 1.0 (got 2.0)", "embed.flip: must be bool (got str 'yes')")
    assert str(err.value).splitlines() == [f"{path}: 2 problems", *(f"  {p}" for p in err.value.problems)]
    path.write_text('[detect]\nmin_score = 2.0\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: detect.min_score: must be <= 1.0 (got 2.0)"
    assert err.value.problems == ("detect.min_score: must be <= 1.0 (got 2.0)",)
    assert ConfigError("a single message").problems == ("a single message",)


def test_tables_of_an_array_are_named_by_their_name_else_by_position() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"camera": [
            {"name": "front", "source": "a.mp4", "fps": 500},
            {"source": "b.mp4", "fps": 500},  # no name
            {"name": 7, "source": "c.mp4", "fps": 500},  # a name that is not a string
            {"name": "side", "source": "d.mp4", "fps": 500},
            {"name": "side", "source": "e.mp4"},  # a name two tables share
        ]})
    assert err.value.problems == (
        "camera[front].fps: must be <= 240.0 (got 500)",
        "camera[1].fps: must be <= 240.0 (got 500)",
        "camera[2].name: must be str (got int 7)",
        "camera[2].fps: must be <= 240.0 (got 500)",
        "camera[3].fps: must be <= 240.0 (got 500)",
        "camera[3].name: 'side' is used by more than one camera",
        "camera[4].name: 'side' is used by more than one camera",
    )


def test_a_wrong_value_is_not_reported_again_by_the_rules_that_read_it() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"sync": {"broker_host": "mqtt.local", "device_id": 5, "hub_sign_key_file": "hub.pub"}})
    assert err.value.problems == ("sync.device_id: must be str (got int 5)",)  # not also "required"
    with pytest.raises(ConfigError) as err:
        config_from_dict({"liveness": {"challenge": "turn_head"}, "align": {"landmarks": "dots"}})
    assert err.value.problems == ("align.landmarks: must be one of mesh, keypoints (got 'dots')",)


def test_a_table_built_in_code_still_checks_the_rules_between_its_keys() -> None:
    with pytest.raises(ConfigError) as err:
        SyncConfig(broker_host="x")
    assert err.value.problems == (
        "sync.device_id: required when sync.broker_host is set",
        "sync.hub_sign_key_file: required when sync.broker_host is set (bundles must be verifiable)",
    )
    with pytest.raises(ConfigError, match="quality.min_brightness: must be below quality.max_brightness"):
        QualityConfig(min_brightness=200.0, max_brightness=100.0)


CAMERAS = [{"name": "front", "source": "a.mp4"}, {"name": "back", "source": "b.mp4"}]


def test_a_door_whose_camera_is_not_configured_fails_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"camera": CAMERAS, "door": [{"name": "lobby", "camera": "side"}]})
    assert err.value.problems == ("door[lobby].camera: 'side' is not a [[camera]] name (front, back)",)
    # Without [[camera]] the cameras are --source's cam0, cam1, ...
    assert config_from_dict({"door": [{"name": "lobby", "camera": "cam1"}]}).door[0].camera == "cam1"
    with pytest.raises(ConfigError, match=r"door\[lobby\]\.camera: 'front' is not a camera: with no \[\[camera\]\]"):
        config_from_dict({"door": [{"name": "lobby", "camera": "front"}]})
    with pytest.raises(ConfigError, match=r"door\[lobby\]\.camera: required"):
        config_from_dict({"camera": CAMERAS, "door": [{"name": "lobby"}]})


def test_two_doors_on_one_camera_fail_at_load() -> None:
    doors = [{"name": "in", "camera": "front"}, {"name": "out", "camera": "back"}, {"name": "fire", "camera": "front"}]
    with pytest.raises(ConfigError) as err:
        config_from_dict({"camera": CAMERAS, "door": doors})
    assert err.value.problems == ("door[fire].camera: 'front' already opens door[in] (one door per camera)",)
    with pytest.raises(ConfigError, match=r"door\[b\]\.camera: 'cam0' already opens door\[a\]"):
        config_from_dict({"door": [{"name": "a", "camera": "cam0"}, {"name": "b", "camera": "cam0"}]})


def test_source_cameras_refuse_a_door_on_a_camera_they_do_not_give() -> None:
    from edge.cli.run import cameras_for

    cfg = config_from_dict({"door": [{"name": "lobby", "camera": "cam3"}, {"name": "side", "camera": "cam0"}]})
    with pytest.raises(ConfigError) as err:
        cameras_for(["clip.mp4"], cfg)
    assert err.value.problems == ("door[lobby].camera: 'cam3' is not among the cameras (cam0)",)
    assert [c.name for c in cameras_for([f"clip{i}.mp4" for i in range(4)], cfg)] == ["cam0", "cam1", "cam2", "cam3"]


def test_model_choices_are_the_registry_names() -> None:
    for data, names in [
        ({"embed": {"model": "x"}}, EMBEDDERS),
        ({"detect": {"model": "x"}}, DETECTORS),
        ({"liveness": {"model": "x"}}, LIVENESS_MODELS),
        ({"embed": {"precision": "x"}}, PRECISIONS),
        ({"models": {"backend": "x"}}, BACKENDS),
    ]:
        with pytest.raises(ConfigError) as err:
            config_from_dict(data)
        listed = err.value.problems[0].split("must be one of ")[1].removesuffix(" (got 'x')")
        assert listed.split(", ") == list(names)


def test_loading_the_config_imports_no_inference_runtime_and_no_access_rules() -> None:
    code = "import sys, edge.config; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    modules = set(loaded.stdout.split())
    assert "edge.config" in modules and "edge.perception.registry" in modules
    assert not modules & {"onnxruntime", "cv2", "numpy", "edge.perception.runtime", "edge.access.rules"}
