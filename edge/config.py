"""The typed config tree read from `config.toml`.

One frozen dataclass per TOML table. Unknown tables or keys, wrong types and out-of-range
values all fail at load with the dotted key and the reason (`embed.model: must be one of
edgeface_xs, dlib_resnet (got 'x')`), so a typo never silently falls back to a default.
Every key is documented in docs/config.md.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ConfigError


def _choice(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True, slots=True)
class ModelsConfig:
    dir: str = ""  # empty: $FACEGATE_MODELS_DIR or the repo's models/
    backend: str = field(default="onnxruntime", metadata=_choice("onnxruntime", "tflite"))
    threads: int = field(default=1, metadata=_range(1, 64))


@dataclass(frozen=True, slots=True)
class DetectConfig:
    model: str = field(default="short", metadata=_choice("short", "full"))
    min_score: float = field(default=0.5, metadata=_range(0.0, 1.0))
    nms_iou: float = field(default=0.3, metadata=_range(0.0, 1.0))
    max_faces: int = field(default=16, metadata=_range(1, 256))
    refine_small: bool = True


@dataclass(frozen=True, slots=True)
class AlignConfig:
    landmarks: str = field(default="mesh", metadata=_choice("mesh", "keypoints"))


@dataclass(frozen=True, slots=True)
class EmbedConfig:
    model: str = field(default="edgeface_xxs", metadata=_choice("edgeface_xs", "edgeface_xxs", "dlib_resnet"))
    precision: str = field(default="int8", metadata=_choice("int8", "fp32"))
    flip: bool = False


@dataclass(frozen=True, slots=True)
class QualityConfig:
    min_eye_distance_px: float = field(default=16.0, metadata=_range(0.0))
    min_sharpness: float = field(default=20.0, metadata=_range(0.0))
    max_yaw_deg: float = field(default=45.0, metadata=_range(0.0, 90.0))
    max_pitch_deg: float = field(default=35.0, metadata=_range(0.0, 90.0))
    min_brightness: float = field(default=40.0, metadata=_range(0.0, 255.0))
    max_brightness: float = field(default=215.0, metadata=_range(0.0, 255.0))
    max_clipped_fraction: float = field(default=0.25, metadata=_range(0.0, 1.0))


@dataclass(frozen=True, slots=True)
class MatchConfig:
    # False-match rate the open-set threshold is set for (per comparison), from the LFW
    # calibration in models/thresholds.toml for the configured embedder.
    target_fmr: float = field(default=1e-4, metadata=_range(1e-6, 1e-2))
    # Explicit cosine threshold; 0 = derive it from target_fmr.
    threshold: float = field(default=0.0, metadata=_range(-1.0, 1.0))


@dataclass(frozen=True, slots=True)
class GalleryConfig:
    # "" = --data-dir, else $STATE_DIRECTORY (systemd), else ~/.local/share/facegate
    data_dir: str = ""
    # "" = $CREDENTIALS_DIRECTORY/facegate-kek (systemd LoadCredential=), else <data_dir>/kek.key
    key_file: str = ""


@dataclass(frozen=True, slots=True)
class Config:
    models: ModelsConfig = ModelsConfig()
    detect: DetectConfig = DetectConfig()
    align: AlignConfig = AlignConfig()
    embed: EmbedConfig = EmbedConfig()
    quality: QualityConfig = QualityConfig()
    match: MatchConfig = MatchConfig()
    gallery: GalleryConfig = GalleryConfig()


_PY_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def _check_value(key: str, f: dataclasses.Field[Any], value: Any) -> Any:
    allowed = _PY_TYPES[str(f.type)]
    # bool is an int in Python; a `true` where a number is expected is still a mistake.
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise ConfigError(f"{key}: must be {f.type} (got {type(value).__name__} {value!r})")
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])} (got {value!r})")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key}: must be >= {meta['min']} (got {value!r})")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key}: must be <= {meta['max']} (got {value!r})")
    return float(value) if f.type == "float" else value


def _build_table(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: must be a table (got {type(raw).__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key; valid keys: {', '.join(fields)}")
    values = {key: _check_value(f"{name}.{key}", fields[key], value) for key, value in raw.items()}
    return cls(**values)


def config_from_dict(data: dict[str, Any]) -> Config:
    tables = {f.name: f for f in dataclasses.fields(Config)}
    for name in data:
        if name not in tables:
            raise ConfigError(f"{name}: unknown table; valid tables: {', '.join(tables)}")
    built = {name: _build_table(name, type(getattr(Config(), name)), raw) for name, raw in data.items()}
    cfg = Config(**built)
    if cfg.quality.min_brightness >= cfg.quality.max_brightness:
        raise ConfigError("quality.min_brightness: must be below quality.max_brightness")
    return cfg


def load_config(path: Path | None) -> Config:
    """Reads `path` (None: built-in defaults, which run offline out of the box)."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
