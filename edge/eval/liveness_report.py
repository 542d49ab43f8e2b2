"""`facegate eval liveness --report`: a self-contained HTML page (figures embedded as PNG).

Score histograms of live and attack items, and the DET-style trade-off APCER vs BPCER over all
thresholds, with the reported operating point marked. matplotlib is imported lazily.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.errors import FacegateError
from edge.eval import pad_metrics as pm


def _png(fig) -> str:  # matplotlib Figure, imported lazily
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # explicit Agg canvas: no pyplot, no display
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(items: Sequence[pm.Item], threshold: float) -> str:
    from matplotlib.figure import Figure

    live, spoof = pm.split(items)
    fig = Figure(figsize=(10, 4))
    ax = fig.add_subplot(1, 2, 1)
    bins = np.linspace(0.0, 1.0, 41)
    ax.hist(live, bins=bins, alpha=0.6, label=f"live ({live.size})", color="tab:green")
    ax.hist(spoof, bins=bins, alpha=0.6, label=f"attack ({spoof.size})", color="tab:red")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("fused liveness score")
    ax.set_ylabel("items")
    ax.set_yscale("log")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    grid = np.unique(np.concatenate([live, spoof, [0.0, 1.0 + 1e-9]]))
    curve = np.array([pm.rates(live, spoof, t) for t in grid])
    ax.plot(curve[:, 0] * 100, curve[:, 1] * 100)
    if np.isfinite(threshold):
        a, b = pm.rates(live, spoof, threshold)
        ax.plot([a * 100], [b * 100], "ko", label=f"APCER {a:.1%}, BPCER {b:.1%}")
        ax.legend()
    ax.set_xlabel("APCER % (attacks accepted)")
    ax.set_ylabel("BPCER % (live rejected)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_yscale("symlog", linthresh=1)
    ax.grid(True, which="both", alpha=0.3)
    return f'<img src="data:image/png;base64,{_png(fig)}">'


def write_report(path: Path, summary: dict[str, object], items: Sequence[pm.Item]) -> None:
    threshold = summary.get("threshold")
    body = _figures(items, float(threshold) if isinstance(threshold, (int, float)) else float("nan"))
    text = (
        "<!doctype html><meta charset='utf-8'><title>facegate liveness evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}</style>"
        "<h1>Liveness (presentation-attack detection)</h1>"
        f"<p>{html.escape(str(summary.get('protocol', '')))}</p>{body}"
        f"<h2>Figures</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>"
    )
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise FacegateError(f"{path}: cannot write report ({exc.strerror or exc})") from exc
