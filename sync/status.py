"""What the device says about itself: the retained status message, and Home Assistant discovery.

Status (`facegate/v1/devices/<id>/status`, retained): online, start time, uptime, model versions
from the manifest, gallery version and per-scope sequences, outbox depth. The broker publishes
the LWT form (`online: false`) when the device vanishes without saying goodbye.

Home Assistant (optional, `[sync] homeassistant = true`): retained config messages under
`<prefix>/<component>/<node_id>/<object_id>/config` (HA's discovery convention) describe one HA
device with sensors for the last decision, last person, liveness, gallery version and outbox
depth, and a binary sensor per door seen in decisions; their states come from one JSON state
topic, availability from the status topic.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.config import Config
from edge.perception.modelstore import default_models_dir, read_manifest
from sync import protocol

HA_STATE = "ha/state"


def facegate_version() -> str:
    try:
        return metadata.version("facegate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def model_versions(cfg: Config) -> dict[str, str]:
    """name → version of every built model (empty when the manifest is not there)."""
    models_dir = Path(cfg.models.dir) if cfg.models.dir else default_models_dir()
    try:
        return {name: rec.version for name, rec in sorted(read_manifest(models_dir).items())}
    except Exception:  # noqa: BLE001 - a missing or unreadable manifest is reported as no models, not a crash
        return {}


def status_message(device_id: str, online: bool, started: float, models: dict[str, str], gallery: dict[str, Any], queue: int) -> bytes:
    return protocol.encode(
        {
            "v": protocol.VERSION, "type": "status", "device": device_id, "online": online, "facegate": facegate_version(),
            "started": int(started), "uptime_s": round(time.time() - started, 1), "models": models, "gallery": gallery, "queue": queue,
        }
    )


def offline_message(device_id: str) -> bytes:
    return protocol.encode({"v": protocol.VERSION, "type": "status", "device": device_id, "online": False})


def _ha_device(device_id: str) -> dict[str, Any]:
    return {"identifiers": [f"facegate_{device_id}"], "name": f"facegate {device_id}", "manufacturer": "facegate", "model": "face recognition", "sw_version": facegate_version()}


def ha_discovery(prefix: str, device_id: str, doors: list[str]) -> list[tuple[str, bytes]]:
    """(topic, retained config payload) for every entity of this device."""
    node = f"facegate_{device_id}"
    state_topic = protocol.device_topic(device_id, HA_STATE)
    common = {
        "state_topic": state_topic,
        "availability_topic": protocol.device_topic(device_id, protocol.STATUS),
        "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
        "device": _ha_device(device_id),
    }
    entities: list[tuple[str, str, dict[str, Any]]] = [
        ("sensor", "last_decision", {"name": "Last decision", "value_template": "{{ value_json.last_decision }}", "icon": "mdi:face-recognition"}),
        ("sensor", "last_person", {"name": "Last person", "value_template": "{{ value_json.last_person }}", "icon": "mdi:account"}),
        ("sensor", "liveness", {"name": "Liveness", "value_template": "{{ value_json.liveness }}", "icon": "mdi:shield-account"}),
        ("sensor", "gallery_version", {"name": "Gallery version", "value_template": "{{ value_json.gallery_version }}", "entity_category": "diagnostic"}),
        ("sensor", "queue", {"name": "Outbox depth", "value_template": "{{ value_json.queue }}", "entity_category": "diagnostic"}),
    ]
    for door in doors:
        entities.append(
            ("binary_sensor", f"door_{door}", {"name": f"Door {door} granted", "device_class": "door",
             "value_template": f"{{{{ 'ON' if value_json.doors.get('{door}') == 'grant' else 'OFF' }}}}"})
        )
    out = []
    for component, object_id, extra in entities:
        config = {**common, **extra, "unique_id": f"{node}_{object_id}", "object_id": f"{node}_{object_id}"}
        out.append((f"{prefix}/{component}/{node}/{object_id}/config", protocol.encode(config)))
    return out
