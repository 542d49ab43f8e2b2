from __future__ import annotations

import shutil

import pytest

from edge.errors import ModelError
from edge.perception.modelstore import ModelStore, read_manifest, write_manifest
from models.build import build


def _copy_store(model_store: ModelStore, tmp_path, names: tuple[str, ...]) -> ModelStore:
    records = {n: model_store.record(n) for n in names}
    for rec in records.values():
        shutil.copyfile(model_store.dir / rec.file, tmp_path / rec.file)
    write_manifest(tmp_path, records)
    return ModelStore(tmp_path)


def test_a_changed_model_file_is_refused(model_store, tmp_path) -> None:
    store = _copy_store(model_store, tmp_path, ("detector_short",))
    path = tmp_path / store.record("detector_short").file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the manifest"):
        store.path("detector_short")


def test_missing_model_and_unknown_name_are_clear_errors(model_store, tmp_path) -> None:
    store = _copy_store(model_store, tmp_path, ("detector_short",))
    (tmp_path / store.record("detector_short").file).unlink()
    with pytest.raises(ModelError, match="missing model file"):
        store.path("detector_short")
    with pytest.raises(ModelError, match="is not in .*manifest.toml"):
        store.path("arcface_r100")


def test_corrupt_manifest_is_a_model_error(tmp_path) -> None:
    (tmp_path / "manifest.toml").write_text("[models.x\nfile=")
    with pytest.raises(ModelError, match="unreadable manifest"):
        read_manifest(tmp_path)


def test_manifest_records_every_model_with_source_and_licence(model_store) -> None:
    expected = {
        "detector_short", "detector_full", "facemesh", "detector_short_tflite", "detector_full_tflite",
        "facemesh_tflite", "edgeface_xs_fp32", "edgeface_xs_int8", "edgeface_xxs_fp32", "edgeface_xxs_int8",
        "dlib_resnet_fp32", "dlib_resnet_int8", "minifasnet_v1se_fp32", "minifasnet_v1se_fp32_tflite",
        "minifasnet_v2_fp32", "minifasnet_v2_fp32_tflite", "minifasnet_v1se_int8", "minifasnet_v2_int8",
    }
    assert expected <= set(model_store.records)
    for name in expected:
        rec = model_store.record(name)
        assert len(rec.sha256) == 64 and rec.licence and rec.source
        model_store.path(name)  # checksum verifies
    assert model_store.record("edgeface_xs_int8").precision == "int8"
    assert model_store.record("edgeface_xs_fp32").inputs == ("input:Nx3x112x112",)


def test_second_build_is_a_no_op(model_store) -> None:
    lines: list[str] = []
    build(model_store.dir, log=lines.append)
    assert lines and all(line.endswith("up to date") for line in lines)
