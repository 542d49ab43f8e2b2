"""`facegate eval liveness`: the command-line side of edge.eval.liveness."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from edge.config import Config
from edge.perception.registry import LIVENESS_MODELS, PRECISIONS

ConfigLoader = Callable[[argparse.Namespace], Config]


def add_eval_command(eval_subparsers: argparse._SubParsersAction, config_loader: ConfigLoader) -> None:  # type: ignore[type-arg]
    p = eval_subparsers.add_parser(
        "liveness",
        help="APCER / BPCER of presentation-attack detection on labelled face crops or videos",
        description="Crops: thresholds chosen by cross-validation (reported). Videos: one track per "
        "video (largest face), decided at the configured [liveness] threshold.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", type=Path, help="CSV file,label[,attack_type][,source] of face crops (label live|spoof)")
    src.add_argument("--videos", type=Path, help="CSV file,label[,attack_type][,source] of videos")
    p.add_argument("--root", type=Path, default=None, help="folder the CSV's files are relative to (default: the CSV's)")
    p.add_argument("--model", choices=tuple(LIVENESS_MODELS), default=None, help="override [liveness] model")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="override [liveness] precision")
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
        )
        if args.json:
            print(json.dumps(summary))
        else:
            for key, value in summary.items():
                if key != "videos":
                    print(f"{key:>22}: {value}")
            for v in summary.get("videos", []):  # type: ignore[union-attr]
                print(f"{v['file']}: {v['label']} -> {v['decision']} (score {v['score']}, cues {v['cues']})")
        return 0

    p.set_defaults(func=run)
