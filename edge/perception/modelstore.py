"""The model manifest (`models/manifest.toml`) and checksum-verified model loading.

`facegate models build` writes the manifest; every stage opens its model through `ModelStore`,
which refuses a file whose sha256 differs from the manifest — a swapped or corrupted model must
never silently change who a door lets in.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError

MANIFEST_NAME = "manifest.toml"
PRECISIONS = ("fp32", "int8")


def default_models_dir() -> Path:
    """`$FACEGATE_MODELS_DIR`, else the `models/` folder beside the installed `edge` package."""
    env = os.environ.get("FACEGATE_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One built model as the manifest describes it."""

    name: str
    file: str
    kind: str  # detector | landmarks | embedder | liveness
    precision: str
    sha256: str
    source: str
    source_sha256: str
    licence: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    recipe: str  # build recipe version; a change forces a rebuild

    @property
    def version(self) -> str:
        """Identifies what the model computes: its source weights and how they were built.

        Stable across machines (unlike `sha256` of an int8 file, which may vary with the
        quantiser's version), so thresholds and templates can be tied to it.
        """
        return f"{self.source_sha256[:12]}-r{self.recipe}"

    def to_toml(self) -> str:
        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [f"[models.{self.name}]"]
        for key in ("file", "kind", "precision", "sha256", "source", "source_sha256", "licence", "recipe"):
            lines.append(f"{key} = {q(getattr(self, key))}")
        for key in ("inputs", "outputs"):
            lines.append(f"{key} = [{', '.join(q(v) for v in getattr(self, key))}]")
        return "\n".join(lines) + "\n"


def read_manifest(models_dir: Path) -> dict[str, ModelRecord]:
    path = models_dir / MANIFEST_NAME
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return {
            name: ModelRecord(
                name=name,
                file=str(rec["file"]),
                kind=str(rec["kind"]),
                precision=str(rec["precision"]),
                sha256=str(rec["sha256"]),
                source=str(rec["source"]),
                source_sha256=str(rec["source_sha256"]),
                licence=str(rec["licence"]),
                inputs=tuple(rec["inputs"]),
                outputs=tuple(rec["outputs"]),
                recipe=str(rec["recipe"]),
            )
            for name, rec in data.get("models", {}).items()
        }
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc}); run `facegate models build --force`") from exc


def write_manifest(models_dir: Path, records: dict[str, ModelRecord]) -> Path:
    path = models_dir / MANIFEST_NAME
    header = "# Written by `facegate models build`; checked on every model load. Do not edit.\n\n"
    body = "\n".join(records[name].to_toml() for name in sorted(records))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written manifest
    return path


class ModelStore:
    """Resolves model names to verified files."""

    def __init__(self, models_dir: Path | None = None) -> None:
        self.dir = models_dir or default_models_dir()
        self._records = read_manifest(self.dir)
        self._verified: set[str] = set()

    @property
    def records(self) -> dict[str, ModelRecord]:
        return dict(self._records)

    def record(self, name: str) -> ModelRecord:
        if name not in self._records:
            known = ", ".join(sorted(self._records)) or "none (not built yet)"
            raise ModelError(
                f"model {name!r} is not in {self.dir / MANIFEST_NAME} (built: {known}); "
                "run `facegate models build`"
            )
        return self._records[name]

    def path(self, name: str) -> Path:
        """The model's file, after checking it against the manifest's sha256 (once per process)."""
        rec = self.record(name)
        path = self.dir / rec.file
        if name in self._verified:
            return path
        if not path.exists():
            raise ModelError(f"{path}: missing model file; run `facegate models build`")
        actual = sha256_file(path)
        if actual != rec.sha256:
            raise ModelError(
                f"{path}: sha256 {actual[:16]}… does not match the manifest ({rec.sha256[:16]}…); "
                "the file was changed after it was built — refusing to load it. "
                "Run `facegate models build --force` to rebuild from the sources."
            )
        self._verified.add(name)
        return path
