"""LFW verification metrics: pairs.txt parsing, k-fold accuracy, TAR@FAR, ROC/DET.

No model is involved here: `evaluate` receives one similarity score per pair (higher = more
similar) and the protocol's fold labels. A pair is accepted as "same" when score >= threshold.

Failed pairs (score NaN: no face found in one of the images) are never silently dropped, since
that would reward a detector for giving up on hard images:
  * accuracy: a failed pair is a wrong decision, whatever the threshold, in every fold;
  * TAR/FAR, ROC, DET, AUC, EER: a failed pair has score -inf, i.e. it is a non-match — a failed
    genuine pair is a false reject, a failed impostor pair a (correct) reject.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from edge.errors import FacegateError

FAR_TARGETS = (1e-3, 1e-4)
_INT = re.compile(r"[0-9]+", re.ASCII)


class PairsFormatError(FacegateError, ValueError):
    """A pairs file does not follow LFW's pairs.txt format; the message names file and line."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


class ScoresError(FacegateError, ValueError):
    """The scores/labels/folds given to `evaluate` cannot be evaluated (shape, values, classes)."""


@dataclass(frozen=True, slots=True)
class Pair:
    fold: int  # 0-based, in file order
    path_a: Path
    path_b: Path
    same: bool


# --------------------------------------------------------------------------------------- parsing


def _image_index(path: Path, line: int, field: str) -> int:
    if not _INT.fullmatch(field) or int(field) < 1:
        raise PairsFormatError(path, line, f"image number {field!r} is not a positive integer")
    return int(field)


def _image_path(images_dir: Path, name: str, index: int) -> Path:
    return images_dir / name / f"{name}_{index:04d}.jpg"


def _parse_header(path: Path, fields: list[str]) -> tuple[int, int]:
    # View 2 (pairs.txt): "<n_folds> <n_per_fold>"; View 1 (pairsDevTrain/Test.txt): "<n>".
    if len(fields) not in (1, 2):
        got = f"got {len(fields)} fields"
        raise PairsFormatError(path, 1, f"header must be '<n_folds> <n_per_fold>' or '<n>', {got}")
    for f in fields:
        if not _INT.fullmatch(f) or int(f) < 1:
            raise PairsFormatError(path, 1, f"header value {f!r} is not a positive integer")
    return (1, int(fields[0])) if len(fields) == 1 else (int(fields[0]), int(fields[1]))


def parse_pairs(pairs_file: Path, images_dir: Path) -> list[Pair]:
    """All pairs of an LFW pairs file, in file order. Missing image files are not checked here."""
    data = pairs_file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PairsFormatError(pairs_file, line, "not UTF-8 text") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing newline (or several) is not an extra pair
        lines.pop()
    if not lines:
        raise PairsFormatError(pairs_file, 1, "file is empty")
    n_folds, per_fold = _parse_header(pairs_file, lines[0].split())
    expected = n_folds * 2 * per_fold
    promise = f"header promises {n_folds} folds × 2 × {per_fold} = {expected} pair lines"
    if len(lines) - 1 < expected:
        problem = f"file ends after {len(lines) - 1} pair lines; {promise}"
        raise PairsFormatError(pairs_file, len(lines) + 1, problem)
    if len(lines) - 1 > expected:
        raise PairsFormatError(pairs_file, expected + 2, f"extra line: {promise}")
    pairs: list[Pair] = []
    for offset, raw in enumerate(lines[1:]):
        n = offset + 2  # 1-based line number; line 1 is the header
        fold, within = divmod(offset, 2 * per_fold)
        same = within < per_fold  # each fold: per_fold matched lines, then per_fold mismatched
        fields = raw.split()
        if not fields:
            raise PairsFormatError(pairs_file, n, "empty line inside the pair list")
        want = 3 if same else 4
        if len(fields) != want:
            form = "matched pair: 'name i j'" if same else "mismatched pair: 'name1 i name2 j'"
            raise PairsFormatError(pairs_file, n, f"{form} ({want} fields), got {len(fields)}")
        if same:
            fields = [fields[0], fields[1], fields[0], fields[2]]  # as 'name_a i name_b j'
        name_a, name_b = fields[0], fields[2]
        i, j = _image_index(pairs_file, n, fields[1]), _image_index(pairs_file, n, fields[3])
        # Both would silently distort the metrics rather than break them, so catch them here.
        if same and i == j:
            raise PairsFormatError(pairs_file, n, f"matched pair compares {name_a} {i} with itself")
        if not same and name_a == name_b:
            raise PairsFormatError(pairs_file, n, f"mismatched pair names one person ({name_a})")
        path_a, path_b = _image_path(images_dir, name_a, i), _image_path(images_dir, name_b, j)
        pairs.append(Pair(fold, path_a, path_b, same))
    return pairs


# --------------------------------------------------------------------------------------- metrics


@dataclass(frozen=True, slots=True)
class VerificationResult:
    accuracy: float  # mean of fold_accuracies
    accuracy_std: float  # population std (ddof=0) over folds, as in the LFW literature
    threshold: float  # mean of fold_thresholds
    tar_at_far_1e_3: float  # k-fold: threshold from training folds, TAR on the test fold, averaged
    tar_at_far_1e_4: float
    auc: float  # pooled over all pairs
    eer: float  # pooled over all pairs
    n_pairs: int
    n_folds: int
    fold_accuracies: tuple[float, ...]
    fold_thresholds: tuple[float, ...]
    cross_validated: bool  # False with one fold: threshold fitted and tested on the same pairs
    n_genuine: int
    n_impostor: int
    n_failed: int  # pairs with a NaN score
    tar_at_far_1e_3_pooled: float  # threshold and TAR on all pairs (optimistic, no held-out data)
    tar_at_far_1e_4_pooled: float
    threshold_at_far_1e_3: float  # pooled; what a deployment at that FAR would use
    threshold_at_far_1e_4: float
    observed_far_1e_3: float  # mean over test folds of the FAR obtained at the CV threshold
    observed_far_1e_4: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: every field, keys spelled `..._1e-3`, tuples as lists, non-finite as None."""
        return {f.name.replace("_1e_", "_1e-"): _jsonable(getattr(self, f.name))
                for f in fields(self)}


def _jsonable(v: object) -> object:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, (bool, int)):  # bool first: it is an int too
        return v
    return float(v) if math.isfinite(v) else None  # type: ignore[arg-type]


def check_inputs(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(same)
    if s.ndim != 1 or y.shape != s.shape or (folds is not None and np.shape(folds) != s.shape):
        shapes = f"{s.shape}, {y.shape}, {np.shape(folds)}"
        raise ScoresError(f"scores, same and folds must be 1-D of equal length, got {shapes}")
    if s.size == 0:
        raise ScoresError("no pairs to evaluate")
    if np.isinf(s).any():
        # ±inf would collide with the sentinel meaning of -inf (failed pair) and break midpoints.
        raise ScoresError("scores must be finite or NaN (NaN = face not found)")
    if y.dtype != np.bool_:
        if not np.isin(y, (0, 1)).all():
            raise ScoresError("same must be boolean (or 0/1)")
        y = y.astype(bool)
    if y.all() or not y.any():
        raise ScoresError("need both genuine (same) and impostor pairs")
    return s, y


def _best_threshold(s: np.ndarray, y: np.ndarray) -> float:
    """Exact accuracy-maximising threshold over midpoints of sorted unique scores (NaN ignored).

    Counting with searchsorted on the sorted genuine/impostor scores is the cumulative-sum trick:
    O(n log n) for all candidates at once instead of one pass per candidate.
    """
    ok = ~np.isnan(s)
    s, y = s[ok], y[ok]
    if s.size == 0:
        raise ScoresError("a training split has no pair with a score (all NaN)")
    u = np.unique(s)
    lo, hi = u[:-1], u[1:]
    mid = lo / 2 + hi / 2  # halves first: cannot overflow
    mid = np.where(mid > lo, mid, hi)  # adjacent floats: mid may round to lo; hi still splits them
    # Also "accept all" (min score) and "reject all" (just above the max).
    cand = np.concatenate([u[:1], mid, [np.nextafter(u[-1], np.inf)]])
    gen, imp = np.sort(s[y]), np.sort(s[~y])
    correct = (gen.size - np.searchsorted(gen, cand, "left")) + np.searchsorted(imp, cand, "left")
    best = np.flatnonzero(correct == correct.max())
    # Ties: take the middle of the maximisers rather than the first, which would sit at the edge of
    # the plateau next to a training score; on an even count, the higher (fewer false accepts).
    return float(cand[best[best.size // 2]])


def _as_failed_low(s: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(s), -np.inf, s)


def _threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold whose FAR over these impostor scores is <= far (NaN counts as -inf)."""
    imp = np.sort(_as_failed_low(impostor))[::-1]
    allowed = math.floor(far * imp.size * (1 + 1e-12))  # tolerance only for products like 1e-3*3000
    if allowed >= imp.size:
        return -math.inf
    # Just above the (allowed+1)-th highest impostor score: exactly `allowed` or fewer are accepted.
    return float(np.nextafter(imp[allowed], np.inf))


def _accept_rate(s: np.ndarray, threshold: float) -> float:
    return float(np.mean(_as_failed_low(s) >= threshold))


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled ROC (far, tar, thresholds); thresholds descend from +inf (0, 0) to the min (1, 1).

    Failed pairs (NaN) count as score -inf: only the final point accepts them."""
    s, y = check_inputs(scores, same, None)
    s = _as_failed_low(s)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    gen, imp = np.sort(s[y]), np.sort(s[~y])
    tar = (gen.size - np.searchsorted(gen, thresholds, "left")) / gen.size
    far = (imp.size - np.searchsorted(imp, thresholds, "left")) / imp.size
    return far, tar, thresholds


def _eer(far: np.ndarray, tar: np.ndarray) -> float:
    # FNMR - FMR falls from 1 to -1 along the curve; interpolate linearly in the crossing segment.
    d = (1 - tar) - far
    i = int(np.argmax(d <= 0))
    if d[i] == 0 or i == 0:
        return float(far[i])
    alpha = d[i - 1] / (d[i - 1] - d[i])
    return float(far[i - 1] + alpha * (far[i] - far[i - 1]))


def evaluate(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> VerificationResult:
    """LFW protocol: for each fold, thresholds fitted on all other folds are applied to it.

    With a single fold there is nothing to hold out: thresholds are fitted on that fold itself
    (`cross_validated=False`, so the numbers are optimistic). Every fold must contain both genuine
    and impostor pairs. Note the FAR resolution: 5 folds of 300 impostors leave 1200 training
    impostors, so FAR 1e-3 allows 1 false accept and FAR 1e-4 allows none — reported as such.
    """
    s, y = check_inputs(scores, same, folds)
    f = np.asarray(folds)
    if not np.issubdtype(f.dtype, np.integer):
        raise ScoresError(f"folds must be integer labels, got dtype {f.dtype}")
    labels = np.unique(f)
    for k in labels:
        if y[f == k].all() or not y[f == k].any():
            raise ScoresError(f"fold {k} needs both genuine and impostor pairs")
    cross_validated = labels.size > 1
    accs: list[float] = []
    thresholds: list[float] = []
    tars: dict[float, list[float]] = {t: [] for t in FAR_TARGETS}
    fars: dict[float, list[float]] = {t: [] for t in FAR_TARGETS}
    for k in labels:
        test = f == k
        train = ~test if cross_validated else test
        t = _best_threshold(s[train], y[train])
        st, yt = s[test], y[test]
        # NaN >= t and NaN < t are both False, so a failed pair is wrong for either label.
        correct = np.where(yt, st >= t, st < t)
        accs.append(float(np.mean(correct)))
        thresholds.append(t)
        for target in FAR_TARGETS:
            t_far = _threshold_at_far(s[train & ~y], target)
            tars[target].append(_accept_rate(st[yt], t_far))
            fars[target].append(_accept_rate(st[~yt], t_far))
    far, tar, _ = roc_curve(s, y)
    pooled_t = {target: _threshold_at_far(s[~y], target) for target in FAR_TARGETS}
    return VerificationResult(
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        threshold=float(np.mean(thresholds)),
        tar_at_far_1e_3=float(np.mean(tars[1e-3])),
        tar_at_far_1e_4=float(np.mean(tars[1e-4])),
        auc=float(np.trapezoid(tar, far)),  # = P(genuine > impostor) + ½ P(tie), ties included
        eer=_eer(far, tar),
        n_pairs=int(s.size),
        n_folds=int(labels.size),
        fold_accuracies=tuple(accs),
        fold_thresholds=tuple(thresholds),
        cross_validated=cross_validated,
        n_genuine=int(y.sum()),
        n_impostor=int((~y).sum()),
        n_failed=int(np.isnan(s).sum()),
        tar_at_far_1e_3_pooled=_accept_rate(s[y], pooled_t[1e-3]),
        tar_at_far_1e_4_pooled=_accept_rate(s[y], pooled_t[1e-4]),
        threshold_at_far_1e_3=pooled_t[1e-3],
        threshold_at_far_1e_4=pooled_t[1e-4],
        observed_far_1e_3=float(np.mean(fars[1e-3])),
        observed_far_1e_4=float(np.mean(fars[1e-4])),
    )
