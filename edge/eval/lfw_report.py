"""The LFW evaluation's HTML report: metrics tables, ROC, DET and score histograms.

Self-contained (PNG images embedded as base64) so it can be attached to an issue or mailed.
matplotlib is imported lazily, only when a report is written (it takes ~0.5 s to import).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from edge.eval.lfw_metrics import VerificationResult, check_inputs, roc_curve


def _png(fig) -> str:  # noqa: ANN001 - matplotlib Figure, imported lazily
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no global backend switch, no display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table(rows: list[tuple[str, object]]) -> str:
    esc = html.escape
    body = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _roc(far: np.ndarray, tar: np.ndarray, result: VerificationResult, n_imp: int) -> str:
    from matplotlib.figure import Figure  # lazy: matplotlib takes ~0.5 s to import

    ax = Figure(figsize=(6, 4.5)).add_subplot()
    keep = far > 0  # log axis: FAR = 0 cannot be drawn
    ax.plot(far[keep], tar[keep], lw=1.5)
    ax.axvline(1 / n_imp, color="grey", ls=":", lw=1, label=f"1 false accept (1/{n_imp})")
    for target, t in ((1e-3, result.tar_at_far_1e_3), (1e-4, result.tar_at_far_1e_4)):
        ax.plot([target], [t], "o", label=f"CV TAR@FAR={target:g}: {t:.4f}")
    # Zoom on the part that separates good models: TAR from FAR 1e-4 up, with a small margin.
    visible = tar[far >= 1e-4]
    floor = max(0.0, float(np.floor((visible.min() if visible.size else 0.0) * 50 - 1) / 50))
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(floor, 1.005), title="ROC (pooled)")
    ax.set(xlabel="FAR (false accept rate)", ylabel="TAR (true accept rate)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(ax.figure)


def _det(far: np.ndarray, tar: np.ndarray, result: VerificationResult, n_imp: int) -> str:
    from matplotlib.figure import Figure

    ax = Figure(figsize=(6, 4.5)).add_subplot()
    fnmr = 1 - tar
    keep = (far > 0) & (fnmr > 0)
    ax.plot(far[keep], fnmr[keep], lw=1.5)
    ax.plot([result.eer], [result.eer], "o", label=f"EER {result.eer:.4f}")
    ax.set(xscale="log", yscale="log", xlim=(min(1e-4, 0.5 / n_imp), 1), title="DET (pooled)")
    ax.set(xlabel="FMR (false match rate)", ylabel="FNMR (false non-match rate)")
    ax.grid(True, which="both", alpha=0.3)
    if result.eer > 0:
        ax.legend(loc="upper right", fontsize=8)
    return _png(ax.figure)


def _histogram(s: np.ndarray, y: np.ndarray, result: VerificationResult) -> str:
    from matplotlib.figure import Figure

    ax = Figure(figsize=(6, 4.5)).add_subplot()
    ok = ~np.isnan(s)
    edges = np.histogram_bin_edges(s[ok], bins=60)
    ax.hist(s[ok & y], bins=edges, alpha=0.6, label=f"genuine ({int((ok & y).sum())})")
    ax.hist(s[ok & ~y], bins=edges, alpha=0.6, label=f"impostor ({int((ok & ~y).sum())})")
    label = f"threshold {result.threshold:.4f}"
    ax.axvline(result.threshold, color="k", ls="--", lw=1, label=label)
    title_ = f"Score distributions ({result.n_failed} failed pairs not shown)"
    ax.set(xlabel="similarity score", ylabel="pairs", title=title_)
    ax.legend(fontsize=8)
    return _png(ax.figure)


def write_report(
    path: Path,
    result: VerificationResult,
    scores: np.ndarray,
    same: np.ndarray,
    title: str,
    meta: dict[str, object],
) -> None:
    """Self-contained HTML page: run + metrics tables, ROC, DET and score histograms as PNGs."""
    far, tar, _ = roc_curve(scores, same)
    s, y = check_inputs(scores, same, None)
    n_imp = int((~y).sum())
    figures = [("ROC", _roc(far, tar, result, n_imp)), ("DET", _det(far, tar, result, n_imp)), ("Scores", _histogram(s, y, result))]
    img = '<h2>{0}</h2><img alt="{0}" src="data:image/png;base64,{1}">'
    imgs = "".join(img.format(name, b64) for name, b64 in figures)
    protocol = (
        "Accuracy and TAR@FAR: thresholds fitted on the other folds, measured on the held-out"
        " fold, averaged over folds."
        if result.cross_validated
        else "Single fold: thresholds fitted and measured on the same pairs (optimistic)."
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{html.escape(protocol)} Failed pairs (no face) count as wrong decisions for accuracy and as
non-matches (score −∞) for TAR/FAR, ROC, DET, AUC and EER.</p>
<h2>Run</h2>{_table(list(meta.items()))}
<h2>Metrics</h2>{_table(list(result.to_dict().items()))}
{imgs}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
