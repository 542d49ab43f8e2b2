"""LFW metrics: pairs parsing, k-fold protocol, TAR@FAR, NaN handling, HTML report."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from edge.eval.lfw_metrics import (
    Pair,
    PairsFormatError,
    ScoresError,
    evaluate,
    parse_pairs,
    roc_curve,
)
from edge.eval.lfw_report import write_report

GOOD = """2\t3
Alice\t1\t2
Bob\t3\t4
Carol\t1\t10
Alice\t1\tBob\t2
Carol\t5\tDave\t1
Eve\t1\tAlice\t3
Dave\t1\t2
Eve\t2\t3
Frank\t7\t12
Frank\t1\tGina\t1
Gina\t2\tHank\t1
Hank\t1\tAlice\t4
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------- parsing


def test_parse_two_folds(tmp_path: Path) -> None:
    images = tmp_path / "images"
    pairs = parse_pairs(_write(tmp_path, GOOD), images)
    assert len(pairs) == 12
    assert [p.fold for p in pairs] == [0] * 6 + [1] * 6
    assert [p.same for p in pairs] == ([True] * 3 + [False] * 3) * 2
    carol, alice, bob = images / "Carol", images / "Alice", images / "Bob"
    assert pairs[2] == Pair(0, carol / "Carol_0001.jpg", carol / "Carol_0010.jpg", True)
    assert pairs[3] == Pair(0, alice / "Alice_0001.jpg", bob / "Bob_0002.jpg", False)
    assert pairs[8].path_b == images / "Frank" / "Frank_0012.jpg"


def test_parse_single_fold_header_and_spaces(tmp_path: Path) -> None:
    # View 1 header, mixed whitespace, CRLF, trailing blank line.
    text = "2\nA 1 2\r\nB  3   4\nA 1 B 1\nC 2 D 3\n\n"
    pairs = parse_pairs(_write(tmp_path, text), tmp_path)
    assert [(p.fold, p.same) for p in pairs] == [(0, True), (0, True), (0, False), (0, False)]
    assert pairs[1].path_b == tmp_path / "B" / "B_0004.jpg"


def _replace_line(text: str, line_no: int, new: str) -> str:
    lines = text.splitlines()
    lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (_replace_line(GOOD, 1, "2\t3\t4"), 1, "header"),
        (_replace_line(GOOD, 1, "two\t3"), 1, "'two'"),
        (_replace_line(GOOD, 1, "0\t3"), 1, "'0'"),
        (_replace_line(GOOD, 3, "Bob\t3"), 3, "3 fields"),
        (_replace_line(GOOD, 3, "Bob\t3\tBob\t4"), 3, "3 fields"),  # mismatched in matched block
        (_replace_line(GOOD, 9, "Eve\t2\tAlice\t3"), 9, "3 fields"),  # fold 2's matched block
        (_replace_line(GOOD, 6, "Carol\t5\tDave"), 6, "4 fields"),
        (_replace_line(GOOD, 6, "Carol\tfive\tDave\t1"), 6, "'five'"),
        (_replace_line(GOOD, 4, "Carol\t1\t2.5"), 4, "'2.5'"),
        (_replace_line(GOOD, 4, "Carol\t-1\t2"), 4, "'-1'"),
        (_replace_line(GOOD, 4, "Carol\t2\t2"), 4, "itself"),
        (_replace_line(GOOD, 7, "Eve\t1\tEve\t3"), 7, "one person"),
        (_replace_line(GOOD, 5, ""), 5, "empty line"),
        (_replace_line(GOOD, 2, "  "), 2, "empty line"),
        ("\n".join(GOOD.splitlines()[:-1]) + "\n", 13, "ends after 11"),  # one line short
        (GOOD + "Zed\t1\tYan\t1\n", 14, "extra line"),
        ("", 1, "empty"),
    ],
)
def test_parse_malformed(tmp_path: Path, text: str, line: int, words: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(PairsFormatError) as info:
        parse_pairs(p, tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{p}:{line}: "), msg
    assert info.value.line == line
    assert words in msg
    assert isinstance(info.value, ValueError)


def test_parse_not_utf8_names_line(tmp_path: Path) -> None:
    p = tmp_path / "pairs.txt"
    p.write_bytes(b"1\t1\nA\t1\t2\n\xff\t1\tB\t1\n")
    with pytest.raises(PairsFormatError, match=r":3: not UTF-8"):
        parse_pairs(p, tmp_path)


def test_parse_real_lfw_pairs(shared_data: Path) -> None:
    lfw = shared_data / "lfw"
    images = lfw / "images"
    pairs = parse_pairs(lfw / "pairs.txt", images)
    assert len(pairs) == 3000
    assert sorted({p.fold for p in pairs}) == [0, 1, 2, 3, 4]
    assert all(sum(p.fold == k for p in pairs) == 600 for k in range(5))
    assert sum(p.same for p in pairs) == 1500
    missing = sorted({str(q) for p in pairs for q in (p.path_a, p.path_b) if not q.is_file()})
    assert not missing, f"{len(missing)} images missing, e.g. {missing[:3]}"


# ------------------------------------------------------------------------------------- metrics


def _folds(n_folds: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    same = np.tile(np.r_[np.ones(per_class, bool), np.zeros(per_class, bool)], n_folds)
    folds = np.repeat(np.arange(n_folds), 2 * per_class)
    return same, folds


def _separable(
    n_folds: int = 5, per_class: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same, folds = _folds(n_folds, per_class)
    scores = np.where(same, rng.uniform(0.6, 1.0, same.size), rng.uniform(-0.2, 0.4, same.size))
    return scores, same, folds


def test_perfectly_separable() -> None:
    scores, same, folds = _separable()
    r = evaluate(scores, same, folds)
    assert r.accuracy == 1.0 and r.accuracy_std == 0.0
    assert r.fold_accuracies == (1.0,) * 5
    assert r.tar_at_far_1e_3 == 1.0 and r.tar_at_far_1e_4 == 1.0
    assert r.tar_at_far_1e_3_pooled == 1.0
    assert r.auc == 1.0 and r.eer == 0.0
    assert all(0.4 <= t <= 0.6 for t in r.fold_thresholds)
    assert r.cross_validated and r.n_folds == 5 and r.n_pairs == 3000 and r.n_failed == 0


def test_random_scores_near_chance() -> None:
    rng = np.random.default_rng(1)
    same, folds = _folds(10, 300)
    r = evaluate(rng.normal(size=same.size), same, folds)
    assert abs(r.accuracy - 0.5) < 0.03
    assert abs(r.auc - 0.5) < 0.03
    assert abs(r.eer - 0.5) < 0.03
    assert r.tar_at_far_1e_3 < 0.02


def test_hand_computed_two_folds() -> None:
    # fold 0: genuine .9 .5 .3, impostor .6 .1   fold 1: genuine .8 .7, impostor .4 .25
    scores = np.array([0.9, 0.5, 0.3, 0.6, 0.1, 0.8, 0.7, 0.4, 0.25])
    same = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    r = evaluate(scores, same, folds)
    # Train on fold 1 → t = (0.4+0.7)/2 = 0.55; on fold 0: .9 ok, .5 .3 rejected, .6 accepted,
    # .1 ok → 2/5. Train on fold 0 → candidates .1:3/5 .2:4/5 .4:3/5 .55:2/5 .75:3/5 >.9:2/5
    # → t = 0.2 (unique best);
    # on fold 1: .8 .7 accepted (ok), impostors .4 and .25 accepted too (wrong) → 2/4.
    assert r.fold_thresholds == pytest.approx((0.55, 0.2))
    assert r.fold_accuracies == pytest.approx((0.4, 0.5))
    assert r.accuracy == pytest.approx(0.45)
    assert r.accuracy_std == pytest.approx(0.05)
    assert r.threshold == pytest.approx(0.375)
    # TAR@FAR: 2 training impostors → 0 false accepts allowed → t just above the top one.
    # Fold 0: t > 0.4 → genuines .9 .5 accepted, .3 not → 2/3. Fold 1: t > 0.6 → .8 .7 → 1.
    assert r.tar_at_far_1e_3 == pytest.approx(5 / 6)
    assert r.tar_at_far_1e_3_pooled == pytest.approx(3 / 5)  # t > 0.6: .9 .8 .7 of 5 genuines
    assert r.observed_far_1e_3 == pytest.approx((1 / 2 + 0) / 2)  # fold 0's impostor .6 > .4
    assert r.auc == pytest.approx(17 / 20)
    assert r.eer == pytest.approx(0.25)
    assert r.n_genuine == 5 and r.n_impostor == 4


def test_tied_thresholds_take_the_middle_maximiser() -> None:
    # Fold 1 (G .8 .3, I .4 .2) as training: candidates .2 .25 .35 .6 >.8 score 2,3,2,3,2 of 4 —
    # .25 and .6 tie; the upper-middle one (.6) is taken. Fold 0 is separable, so fold 1's
    # t = (.1 + .75) / 2 = .425, rejecting .3 (wrong) and .4, .2 (right) → 3/4.
    scores = np.array([0.9, 0.75, 0.1, 0.05, 0.8, 0.3, 0.4, 0.2])
    same, folds = _folds(2, 2)
    r = evaluate(scores, same, folds)
    assert r.fold_thresholds == pytest.approx((0.6, 0.425))
    assert r.fold_accuracies == pytest.approx((1.0, 0.75))


def test_single_fold_is_not_cross_validated() -> None:
    scores, same, folds = _separable(n_folds=1, per_class=50)
    r = evaluate(scores, same, np.zeros_like(folds))
    assert not r.cross_validated and r.n_folds == 1
    assert r.accuracy == 1.0 and r.fold_thresholds == (r.threshold,)


def test_threshold_is_exact_between_adjacent_floats() -> None:
    a = 0.5
    b = float(np.nextafter(a, 1.0))
    same, folds = _folds(2, 1)  # each fold: one genuine at b, one impostor at a
    r = evaluate(np.array([b, a, b, a]), same, folds)
    assert r.accuracy == 1.0


def test_nan_counts_as_error_in_every_fold() -> None:
    scores, same, folds = _separable(n_folds=2, per_class=5)
    scores[0] = np.nan  # a genuine pair in fold 0
    scores[7] = np.nan  # an impostor in fold 0: "correctly rejected" as -inf, still wrong here
    r = evaluate(scores, same, folds)
    assert r.fold_accuracies == (0.8, 1.0)
    assert r.accuracy == pytest.approx(0.9)
    assert r.n_failed == 2
    assert r.tar_at_far_1e_3 == pytest.approx((4 / 5 + 1) / 2)  # failed genuine = false reject
    # Failed impostor = non-match (-inf): it never becomes the top impostor that sets the threshold.
    assert r.threshold_at_far_1e_3 == np.nextafter(np.nanmax(scores[~same]), np.inf)
    assert r.tar_at_far_1e_3_pooled == pytest.approx(9 / 10)
    far, tar, _ = roc_curve(scores, same)
    assert far[-1] == 1.0 and tar[-1] == 1.0 and tar[-2] == pytest.approx(0.9)


def test_nan_in_training_does_not_move_threshold() -> None:
    scores, same, folds = _separable(n_folds=3, per_class=20)
    clean = evaluate(scores, same, folds)
    scores[folds == 0] = np.where(same[folds == 0], np.nan, scores[folds == 0])
    r = evaluate(scores, same, folds)
    assert r.fold_accuracies[0] == 0.5 and r.fold_accuracies[1:] == (1.0, 1.0)
    assert r.fold_thresholds[0] == clean.fold_thresholds[0]


def test_tar_at_far_k_fold_is_conservative() -> None:
    # 5 folds × 300 impostors → 1200 training impostors: FAR 1e-3 allows 1 false accept, 1e-4 none.
    rng = np.random.default_rng(2)
    same, folds = _folds(5, 300)
    scores = np.where(same, rng.normal(1.0, 1.0, same.size), rng.normal(-1.0, 1.0, same.size))
    r = evaluate(scores, same, folds)
    expected: dict[int, list[float]] = {1: [], 0: []}  # false accepts allowed → per-fold TAR
    for k in range(5):
        imp = np.sort(scores[(folds != k) & ~same])
        assert imp.size == 1200
        genuine = scores[(folds == k) & same]
        for allowed in expected:
            t = np.nextafter(imp[-1 - allowed], np.inf)  # just above the (allowed+1)-th highest
            expected[allowed].append(float(np.mean(genuine >= t)))
    assert r.tar_at_far_1e_3 == pytest.approx(np.mean(expected[1]))
    assert r.tar_at_far_1e_4 == pytest.approx(np.mean(expected[0]))
    assert r.tar_at_far_1e_4 < r.tar_at_far_1e_3 < 1.0
    t = r.threshold_at_far_1e_3  # pooled: 1500 impostors → 1 false accept allowed
    assert np.sum(scores[~same] >= t) == 1
    assert np.sum(scores[~same] >= np.nextafter(t, -np.inf)) == 2  # t is the smallest such threshold
    assert r.tar_at_far_1e_3_pooled == pytest.approx(np.mean(scores[same] >= t))


def test_roc_curve_shape() -> None:
    scores, same, _ = _separable(n_folds=1, per_class=20)
    far, tar, thr = roc_curve(scores, same)
    assert far[0] == 0.0 and tar[0] == 0.0 and thr[0] == np.inf
    assert far[-1] == 1.0 and tar[-1] == 1.0
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(tar) >= 0) and np.all(np.diff(thr) < 0)


@pytest.mark.parametrize(
    ("scores", "same", "folds"),
    [
        (np.array([0.1, 0.2]), np.array([True, True]), np.array([0, 0])),  # no impostor
        (np.array([0.1, np.inf]), np.array([True, False]), np.array([0, 0])),
        (np.array([0.1, 0.2]), np.array([True, False]), np.array([0, 0, 0])),
        (np.array([0.1, 0.2]), np.array([1, 2]), np.array([0, 0])),
        (np.array([0.1, 0.2]), np.array([True, False]), np.array([0.0, 0.0])),
        (np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 1]), np.array([0, 0, 1, 1])),
        (np.array([np.nan, np.nan, 0.3, 0.4]), np.array([1, 0, 1, 0]), np.array([0, 0, 1, 1])),
    ],
)
def test_bad_inputs_raise(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> None:
    with pytest.raises(ScoresError):
        evaluate(scores, same, folds)


def test_to_dict_is_json_ready() -> None:
    scores, same, folds = _separable(n_folds=2, per_class=10)
    r = evaluate(scores, same, folds)
    d = r.to_dict()
    keys = ("accuracy", "accuracy_std", "tar_at_far_1e-3", "tar_at_far_1e-4", "threshold",
            "n_pairs", "auc", "eer", "fold_accuracies")
    assert set(keys) <= set(d)
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["tar_at_far_1e-3"] == r.tar_at_far_1e_3
    assert d["tar_at_far_1e-4_pooled"] == r.tar_at_far_1e_4_pooled
    assert d["fold_accuracies"] == list(r.fold_accuracies) and d["n_pairs"] == 40
    assert d["cross_validated"] is True


# -------------------------------------------------------------------------------------- report


def test_write_report(tmp_path: Path) -> None:
    scores, same, folds = _separable(n_folds=2, per_class=50)
    scores = scores + np.random.default_rng(3).normal(0, 0.15, scores.size)  # overlap: non-trivial DET
    scores[3] = np.nan
    r = evaluate(scores, same, folds)
    out = tmp_path / "sub" / "report.html"
    meta = {"model": "w600k_mbf", "precision": "fp16", "ms/image": 4.2, "detect failures": 1}
    write_report(out, r, scores, same, "ArcFace <fp16>", meta)
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "ArcFace &lt;fp16&gt;" in page and "w600k_mbf" in page
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) >= 3
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
