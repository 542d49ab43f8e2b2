"""Every labelled face of the developers' data, embedded once and cached: the impostor and
genuine scores behind the threshold calibration and the open-set evaluation.

Identities are namespaced by source so that two sources never share a label by accident:
`lfw/<Name>` (photos; Obama, Biden... of face_recognition/ are folded into their LFW names),
`orl/<subject>`, and for the liveness sets `src/<repository>` — each of those repositories films
or photographs one person (its author), so its crops and live video frames are one identity.
CelebA-Spoof's live photos carry no identity label at all; each is its own `celeba/<n>`
identity and the set is flagged `labelled=False` (a pair of them may be one person, which can
only make an impostor tail look worse, never better).

The cache (`--cache`, default ~/.cache/facegate) is keyed by the embedder's model version, so a
rebuilt model never reuses old vectors. Raw outputs of the chip and of its mirror image are kept
apart, so one extraction serves both `[embed] flip` settings.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.config import Config
from edge.errors import FacegateError
from edge.eval.lfw import central_face
from edge.perception.embed import chips_to_tensor
from edge.perception.faces import Perception, embedder_model_name
from edge.perception.imageio import load_image
from edge.perception.modelstore import ModelStore

# LFW's own label errors among folds 1-5, found as the highest "impostor" scores and checked by
# eye: one photo filed under two names, and the same people under two spellings. Left in, they
# would count as strangers matched at 0.68-0.95 and decide every figure at 1e-3 and below.
LFW_SAME_PERSON = {
    "Martha_Bowen": "Gabrielle_Rose",  # Gabrielle_Rose_0001 and Martha_Bowen_0002 are one photo
    "Dai_Chul_Chyung": "Chyung_Dai-chul",
    "Hassan_Wirajuda": "Hasan_Wirayuda",
    "Cristina_Kirchner": "Cristina_Fernandez",
}
VIDEO_FRAME_STEP = 10  # every 10th frame of a live video (consecutive frames are near copies)
VIDEO_MAX_FRAMES = 24


@dataclass(frozen=True, slots=True)
class Item:
    key: str  # path relative to the data root (+ "#frame" for video frames)
    identity: str
    source: str  # "lfw", "orl", "face_recognition", "liveness", "celeba", "video"
    fold: int  # LFW View-2 fold (1-5) of the identity, 0 for other sources
    labelled: bool = True


@dataclass(frozen=True, slots=True)
class FaceSet:
    """Embedded items (no face found: left out, counted in `missing`)."""

    model: str
    items: tuple[Item, ...]
    plain: np.ndarray  # (n, dim) L2-normalised embeddings of the chips
    flipped: np.ndarray  # (n, dim) L2-normalised sum of chip and mirror outputs ([embed] flip)
    missing: int

    def vectors(self, flip: bool) -> np.ndarray:
        return self.flipped if flip else self.plain

    def subset(self, rows: np.ndarray) -> FaceSet:
        return FaceSet(self.model, tuple(self.items[i] for i in rows), self.plain[rows], self.flipped[rows], self.missing)

    def where(self, **match: object) -> np.ndarray:
        """Row indices whose item fields equal `match`."""
        return np.array([i for i, it in enumerate(self.items) if all(getattr(it, k) == v for k, v in match.items())], dtype=np.int64)


def _lfw_folds(root: Path) -> dict[str, int]:
    folds: dict[str, int] = {}
    lines = (root / "lfw" / "pairs.txt").read_text().split("\n")
    n_folds, per = (int(v) for v in lines[0].split())
    body = [line.split("\t") for line in lines[1:] if line.strip()]
    for n, fields in enumerate(body):
        fold = n // (2 * per) + 1
        for name in (fields[0], fields[2]) if len(fields) == 4 else (fields[0],):
            folds.setdefault(name, fold)
    return folds


def collect(root: Path) -> list[Item]:
    """Every labelled face image (and live video, as frames) under `root` (../shared/data)."""
    items: list[Item] = []
    folds = _lfw_folds(root)
    lfw_names = {p.name for p in (root / "lfw" / "images").iterdir() if p.is_dir()}
    for path in sorted((root / "lfw" / "images").glob("*/*.jpg")):
        name = LFW_SAME_PERSON.get(path.parent.name, path.parent.name)
        items.append(Item(str(path.relative_to(root)), f"lfw/{name}", "lfw", folds.get(name, folds.get(path.parent.name, 0))))
    for path in sorted((root / "orl").glob("s*/*.pgm")):
        items.append(Item(str(path.relative_to(root)), f"orl/{path.parent.name}", "orl", 0))
    for row in csv.DictReader((root / "face_recognition" / "identities.csv").open()):
        if row["n_faces_labelled"] != "1":
            continue
        lfw_name = {"joe_biden": "Joseph_Biden"}.get(row["identity"], "_".join(w.capitalize() for w in row["identity"].split("_")))
        identity = f"lfw/{lfw_name}" if lfw_name in lfw_names else f"fr/{row['identity']}"
        items.append(Item(f"face_recognition/{row['file']}", identity, "face_recognition", folds.get(lfw_name, 0)))
    for sub in ("liveness", "liveness_more"):
        for row in csv.DictReader((root / sub / "labels.csv").open()):
            if row["label"] != "live":
                continue
            key = f"{sub}/{row['file']}"
            if row["source"].startswith("celeba"):
                items.append(Item(key, f"celeba/{Path(row['file']).stem}", "celeba", 0, labelled=False))
            else:
                items.append(Item(key, f"src/{row['source']}", "liveness", 0))
    videos = [(f"liveness_more/{r['file']}", r["source"]) for r in csv.DictReader((root / "liveness_more" / "videos.csv").open()) if r["label"] == "live"]
    videos.append(("videos/apfol_real2.webm", "apfol"))
    for key, source in videos:
        items.extend(Item(f"{key}#{n}", f"src/{source}", "video", 0) for n in range(0, VIDEO_FRAME_STEP * VIDEO_MAX_FRAMES, VIDEO_FRAME_STEP))
    return items


def _frames(path: Path) -> dict[int, np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames: dict[int, np.ndarray] = {}
    n = 0
    while len(frames) < VIDEO_MAX_FRAMES:
        ok, bgr = cap.read()
        if not ok:
            break
        if n % VIDEO_FRAME_STEP == 0:
            frames[n] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        n += 1
    cap.release()
    return frames


def _images(root: Path, items: list[Item]):  # noqa: ANN202 - generator of (item, image | None)
    videos: dict[str, dict[int, np.ndarray]] = {}
    for item in items:
        if "#" in item.key:
            file, frame = item.key.split("#")
            if file not in videos:
                videos = {file: _frames(root / file)}  # one video's frames in memory at a time
            yield item, videos[file].get(int(frame))
            continue
        try:
            yield item, load_image(root / item.key)
        except FacegateError:
            yield item, None


def _embed(cfg: Config, root: Path, items: list[Item], progress: bool) -> tuple[list[Item], np.ndarray, np.ndarray]:
    perception = Perception(cfg)
    assert perception.embedder is not None
    session, spec = perception.embedder._session, perception.embedder.spec  # noqa: SLF001 - raw outputs wanted
    kept: list[Item] = []
    plain: list[np.ndarray] = []
    mirror: list[np.ndarray] = []
    for n, (item, image) in enumerate(_images(root, items), 1):
        face = None if image is None else central_face(perception.faces(image, embed=False), image.shape)
        if face is not None and face.chip is not None:
            name = session.inputs[0].name
            plain.append(session.run({name: chips_to_tensor([face.chip.image], spec)})[0].reshape(-1))
            mirror.append(session.run({name: chips_to_tensor([face.chip.image[:, ::-1]], spec)})[0].reshape(-1))
            kept.append(item)
        if progress and (n % 250 == 0 or n == len(items)):
            print(f"\rembedding faces: {n}/{len(items)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return kept, np.asarray(plain, np.float32), np.asarray(mirror, np.float32)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def config_for_model(cfg: Config, model: str) -> Config:
    """`cfg` with the embedder of a manifest name such as "edgeface_xs_fp32"."""
    name, precision = model.rsplit("_", 1)
    return replace(cfg, embed=replace(cfg.embed, model=name, precision=precision))


def model_store(cfg: Config) -> ModelStore:
    return ModelStore(Path(cfg.models.dir) if cfg.models.dir else None)


def load(cfg: Config, root: Path, cache: Path | None = None, progress: bool = True) -> FaceSet:
    """The face set of `root` embedded with `cfg`'s embedder, from the cache when it is there."""
    items = collect(root)
    model = embedder_model_name(cfg)
    version = model_store(cfg).record(model).version
    cache = cache or Path.home() / ".cache" / "facegate"
    file = cache / f"faceset-{model}-{version}-{cfg.detect.model}.npz"
    by_key = {it.key: it for it in items}
    if file.exists():
        data = np.load(file, allow_pickle=False)
        keys = [str(k) for k in data["keys"]]
        if all(k in by_key for k in keys) and int(data["n_items"]) == len(items):
            kept = [by_key[k] for k in keys]
            return FaceSet(model, tuple(kept), _unit(data["plain"]), _unit(data["plain"] + data["mirror"]), len(items) - len(kept))
    kept, plain, mirror = _embed(cfg, root, items, progress)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, keys=np.array([it.key for it in kept]), plain=plain, mirror=mirror, n_items=len(items))
    return FaceSet(model, tuple(kept), _unit(plain), _unit(plain + mirror), len(items) - len(kept))
