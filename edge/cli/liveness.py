"""`facegate eval liveness`: the command-line side of edge.eval.liveness."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.perception.registry import LIVENESS_MODELS, PRECISIONS

ConfigLoader = Callable[[argparse.Namespace], Config]
SECTIONS = ("by_source", "apcer_by_attack_type", "leave_one_source_out", "calibrated_leave_one_source_out", "windows", "videos", "cues", "kinds")


def add_eval_command(eval_subparsers: argparse._SubParsersAction, config_loader: ConfigLoader) -> None:  # type: ignore[type-arg]
    p = eval_subparsers.add_parser(
        "liveness",
        help="APCER / BPCER of presentation-attack detection on labelled images or videos, as the device decides",
        description="Every image or video is decided at the configured [liveness] threshold, as the daemon "
        "decides a track (photos through the detector and the daemon's crop geometry, face crops as their own "
        "box); figures per source and attack type with 95 % intervals. --cross-validate fits the threshold instead.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", type=Path, nargs="+", help="CSV(s) file,label[,attack_type][,source][,kind] of images (label live|spoof, kind crop|photo)")
    src.add_argument("--videos", type=Path, nargs="+", help="CSV(s) file,label[,attack_type][,source] of videos")
    p.add_argument("--root", type=Path, default=None, help="folder the CSVs' files are relative to (default: each CSV's)")
    p.add_argument("--model", choices=tuple(LIVENESS_MODELS), default=None, help="override [liveness] model")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="override [liveness] precision")
    p.add_argument(
        "--cross-validate", action="store_true",
        help="images: fit the threshold on held-out folds and leave-one-source-out instead of deciding at the configured one",
    )
    p.add_argument(
        "--calibrate-loso", action="store_true",
        help="images: also fit a logistic fusion of the cues on all other sources and report each held-out source",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", type=Path, default=None, help="write an HTML report (score histograms, DET curve)")
    p.add_argument(
        "--calibrate", type=Path, default=None, metavar="FILE",
        help="write fused-score thresholds per target APCER from these attacks to FILE "
        "(read by [liveness] target_apcer + calibration)",
    )

    def run(args: argparse.Namespace) -> int:
        from edge.eval.liveness import run_eval

        summary = run_eval(
            config_loader(args), args.labels, args.videos, args.root,
            precision=args.precision, model=args.model, report=args.report,
            calibrate=args.calibrate, progress=not args.json,
            cross_validate=args.cross_validate, calibrate_loso=args.calibrate_loso,
        )
        if args.json:
            print(json.dumps(summary))
        else:
            print_text(summary)
        return 0

    p.set_defaults(func=run)


def _pct(figures: dict[str, object], key: str) -> str:
    value, ci = figures.get(key), figures.get(f"{key}_ci95")
    if not isinstance(value, (int, float)):
        return "-"
    bounds = f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if isinstance(ci, list) else ""
    return f"{value * 100:.1f}{bounds}"


def _row(name: str, figures: dict[str, object]) -> str:
    return (
        f"{name:<28} {figures.get('n_live', ''):>5} {figures.get('n_spoof', ''):>5}  "
        f"{_pct(figures, 'apcer'):<20} {_pct(figures, 'bpcer'):<20} {_pct(figures, 'acer'):<20}"
    )


def print_text(summary: dict[str, object]) -> None:
    """The headline keys, then one table row per source (APCER / BPCER / ACER in % [95 % CI])."""
    for key, value in summary.items():
        if key not in SECTIONS:
            print(f"{key:>22}: {value}")
    print(f"\n{'source':<28} {'live':>5} {'spoof':>5}  {'APCER %':<20} {'BPCER %':<20} {'ACER %':<20}")
    print(_row("all", summary))
    for section, title in (("by_source", ""), ("windows", "windows")):
        table = summary.get(section)
        if isinstance(table, dict) and section == "windows":
            print(_row("windows (all)", table))
            table = table.get("by_source")
        for name, figures in (table or {}).items():  # type: ignore[union-attr]
            print(_row(f"{title} {name}".strip(), figures))
    for v in summary.get("videos", []):  # type: ignore[union-attr]
        print(f"{v['file']}: {v['label']} -> {v['decision']} (score {v['score']}, windows right {v['windows_right']}/{v['windows']})")
