"""The typed config tree read from `config.toml`.

`tables` holds one frozen dataclass per TOML table, `rules` the rules between keys, and `load`
the one pass that reads a file and reports every problem in it at once, each with its dotted
key path (`camera[front].fps: must be <= 240.0 (got 500)`). Every key is documented in
docs/config.md.
"""

from edge.config.load import config_from_dict, load_config, settings
from edge.config.rules import check_door_cameras
from edge.config.tables import (
    AlignConfig,
    CameraConfig,
    Config,
    DecideConfig,
    DetectConfig,
    DoorConfig,
    EmbedConfig,
    GalleryConfig,
    HubConfig,
    LivenessConfig,
    MatchConfig,
    MetricsConfig,
    ModelsConfig,
    PrivacyConfig,
    QualityConfig,
    SyncConfig,
    TrackConfig,
    ZmqConfig,
)

__all__ = [
    "AlignConfig",
    "CameraConfig",
    "Config",
    "DecideConfig",
    "DetectConfig",
    "DoorConfig",
    "EmbedConfig",
    "GalleryConfig",
    "HubConfig",
    "LivenessConfig",
    "MatchConfig",
    "MetricsConfig",
    "ModelsConfig",
    "PrivacyConfig",
    "QualityConfig",
    "SyncConfig",
    "TrackConfig",
    "ZmqConfig",
    "check_door_cameras",
    "config_from_dict",
    "load_config",
    "settings",
]
