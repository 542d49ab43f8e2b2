"""Reading `config.toml`: one pass over the file that reports every problem at once.

Unknown tables and keys, wrong types, out-of-range values, bad choices and the rules between
keys (edge/config/rules.py) are all collected, each starting with its dotted key
(`embed.model: must be one of edgeface_xs, edgeface_xxs, dlib_resnet (got 'x')`), and raised as
one ConfigError whose `problems` lists them; a typo never silently falls back to a default.
The tables of an array are named by their `name` (`camera[front].fps`), or by their position
when the name is missing, wrong or shared (`camera[0].fps`).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge.config.rules import door_camera_problems, duplicate_names, table_problems
from edge.config.tables import CameraConfig, Config, DoorConfig
from edge.errors import ConfigError

ARRAYS: dict[str, type] = {"camera": CameraConfig, "door": DoorConfig}  # [[camera]], [[door]]
TABLES: dict[str, type] = {f.name: type(f.default) for f in dataclasses.fields(Config) if f.name not in ARRAYS}
_PY_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
_LIST_TYPES: dict[str, tuple[type, ...]] = {"tuple[str, ...]": (str,), "tuple[int, ...]": (int,), "tuple[float, ...]": (int, float)}


@dataclass(slots=True)
class _Table:
    """One table read from the file: every key's value (the default where the file's is wrong)."""

    where: str  # its key path: "sync", "camera[front]"
    values: dict[str, Any]
    bad: set[str]  # keys whose value in the file is wrong

    @classmethod
    def defaults(cls, where: str, table: type) -> _Table:
        return cls(where, {f.name: f.default for f in dataclasses.fields(table)}, set())

    @property
    def view(self) -> SimpleNamespace:
        return SimpleNamespace(**self.values)


_Array = list[_Table | None] | None  # None: not an array of tables


def _value_problem(key: str, f: dataclasses.Field[Any], value: Any) -> str | None:
    if str(f.type) in _LIST_TYPES:
        items = _LIST_TYPES[str(f.type)]
        if not isinstance(value, list) or not all(isinstance(v, items) and not isinstance(v, bool) for v in value):
            return f"{key}: must be a list of {items[-1].__name__} (got {value!r})"
        return None
    allowed = _PY_TYPES[str(f.type)]
    # bool is an int in Python; a `true` where a number is expected is still a mistake.
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        return f"{key}: must be {f.type} (got {type(value).__name__} {value!r})"
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}: must be one of {', '.join(map(str, meta['choices']))} (got {value!r})"
    if meta.get("min") is not None and value < meta["min"]:
        return f"{key}: must be >= {meta['min']} (got {value!r})"
    if meta.get("max") is not None and value > meta["max"]:
        return f"{key}: must be <= {meta['max']} (got {value!r})"
    return None


def _typed(f: dataclasses.Field[Any], value: Any) -> Any:
    if str(f.type) == "tuple[float, ...]":
        return tuple(float(v) for v in value)
    if str(f.type) in _LIST_TYPES:
        return tuple(value)
    return float(value) if f.type == "float" else value


def _read_table(name: str, where: str, cls: type, raw: Any, problems: list[str]) -> _Table | None:
    """The table `raw` as `cls` (None when it is not a table at all); its problems go to `problems`."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a table (got {type(raw).__name__})")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls)}
    table = _Table.defaults(where, cls)
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{where}.{key}: unknown key; valid keys: {', '.join(fields)}")
        elif (problem := _value_problem(f"{where}.{key}", fields[key], value)) is not None:
            problems.append(problem)
            table.bad.add(key)
        else:
            table.values[key] = _typed(fields[key], value)
    problems += table_problems(name, table.view, where, table.bad)
    return table


def _item_paths(array: str, items: list[Any]) -> list[str]:
    """Key paths of an array's tables: `camera[front]` by a name only that table has, else `camera[0]`."""
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    return [
        f"{array}[{name}]" if isinstance(name, str) and name and names.count(name) == 1 else f"{array}[{i}]"
        for i, name in enumerate(names)
    ]


def _read_array(name: str, raw: Any, problems: list[str]) -> _Array:
    if not isinstance(raw, list):
        problems.append(f"{name}: must be an array of tables ([[{name}]])")
        return None
    paths = _item_paths(name, raw)
    return [_read_table(name, where, ARRAYS[name], item, problems) for where, item in zip(paths, raw, strict=True)]


def _array_problems(cameras: _Array, doors: _Array) -> list[str]:
    """Unique names in each array; each door's camera (door_camera_problems)."""
    found = []
    for array, tables in (("camera", cameras), ("door", doors)):
        named = [(t.where, t.view) for t in tables or () if t is not None and "name" not in t.bad]
        found += duplicate_names(array, named)
    # Doors are matched to cameras only when every camera's name could be read (else the
    # cameras' own problems say what is wrong).
    if cameras is not None and all(t is not None and "name" not in t.bad for t in cameras):
        names = [t.values["name"] for t in cameras if t is not None] or None
        placed = [t for t in doors or () if t is not None and "camera" not in t.bad and t.values["camera"]]
        found += door_camera_problems([(t.where, t.view) for t in placed], names)
    return found


def _read(data: dict[str, Any], problems: list[str]) -> tuple[dict[str, _Table], dict[str, _Array]]:
    """Every table of `data` (defaults for the ones it lacks); every problem goes to `problems`."""
    tables: dict[str, _Table | None] = {}
    arrays: dict[str, _Array] = {name: [] for name in ARRAYS}
    for name, raw in data.items():
        if name in ARRAYS:
            arrays[name] = _read_array(name, raw, problems)
        elif name in TABLES:
            tables[name] = _read_table(name, name, TABLES[name], raw, problems)
        else:
            valid = ", ".join(f.name for f in dataclasses.fields(Config))
            problems.append(f"{name}: unknown table; valid tables: {valid}")
    singles = {name: tables.get(name) or _Table.defaults(name, cls) for name, cls in TABLES.items()}
    # Rules between tables skip the keys, and the tables, that are wrong themselves.
    bad = {name for name, t in tables.items() if t is None}
    bad |= {f"{t.where}.{key}" for t in singles.values() for key in t.bad}
    problems += table_problems("", SimpleNamespace(**{n: t.view for n, t in singles.items()}), "", bad)
    problems += _array_problems(arrays["camera"], arrays["door"])
    return singles, arrays


def config_from_dict(data: dict[str, Any]) -> Config:
    """The Config of a parsed TOML document; ConfigError naming every problem in it otherwise."""
    problems: list[str] = []
    tables, arrays = _read(data, problems)
    if problems:
        raise ConfigError.listing(problems)
    built: dict[str, Any] = {name: TABLES[name](**t.values) for name, t in tables.items()}
    for name, items in arrays.items():  # no problems: every array is a list of tables
        built[name] = tuple(ARRAYS[name](**t.values) for t in items or () if t is not None)
    return Config(**built)


def load_config(path: Path | None) -> Config:
    """Reads `path` (None: built-in defaults, which run offline out of the box)."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = f"cannot read config ({exc.strerror or exc})"
        raise ConfigError(f"{path}: {reason}", (reason,)) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        reason = f"not valid TOML ({exc})"
        raise ConfigError(f"{path}: {reason}", (reason,)) from exc
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError.listing(exc.problems, str(path)) from exc


def settings(cfg: Config) -> Iterator[tuple[str, Any]]:
    """Every key of `cfg` with its value, by the key path the loader reports (`camera[front].source`)."""
    for table in dataclasses.fields(Config):
        value = getattr(cfg, table.name)
        is_array = table.name in ARRAYS
        sections = [(f"{table.name}[{t.name}]", t) for t in value] if is_array else [(table.name, value)]
        for where, section in sections:
            for f in dataclasses.fields(section):
                yield f"{where}.{f.name}", getattr(section, f.name)
