"""The `facegate` command. Errors from facegate print as one line and exit 2; no tracebacks."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from pathlib import Path

from edge.cli.common import DEFAULT_CONFIG, config_for
from edge.config import Config
from edge.errors import FacegateError
from edge.perception.registry import EMBEDDERS, PRECISIONS

CONFIG_HELP = "config.toml (default: the bundled one)"


def _version() -> str:
    try:
        return metadata.version("facegate")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _models_dir(args: argparse.Namespace, cfg: Config) -> Path:
    from edge.perception.modelstore import default_models_dir

    if getattr(args, "models_dir", None):
        return Path(args.models_dir)
    return Path(cfg.models.dir) if cfg.models.dir else default_models_dir()


def cmd_models_build(args: argparse.Namespace) -> int:
    from models.build import build

    build(_models_dir(args, config_for(args)), force=args.force, log=lambda m: print(m, file=sys.stderr))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from edge.perception.modelstore import ModelStore

    store = ModelStore(_models_dir(args, config_for(args)))
    rows = []
    for name, rec in sorted(store.records.items()):
        store.path(name)  # verifies the checksum; raises on mismatch
        rows.append({"name": name, "file": rec.file, "precision": rec.precision, "licence": rec.licence, "sha256": rec.sha256, "source": rec.source})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['name']:<22} {r['precision']:<5} {r['sha256'][:12]}  {r['licence']:<14} {r['source']}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from edge.perception.faces import Perception
    from edge.perception.imageio import load_image

    cfg = config_for(args)
    perception = Perception(cfg)
    results = []
    failed = False
    for path in args.images:
        try:
            faces = perception.faces(load_image(path))
            results.append({"file": str(path), "faces": [f.to_dict() for f in faces]})
        except FacegateError as exc:
            failed = True
            results.append({"file": str(path), "faces": [], "error": str(exc)})
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            status = r.get("error") or f"{len(r['faces'])} face(s)"
            print(f"{r['file']}: {status}")
    return 1 if failed else 0


def cmd_eval_lfw(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from edge.eval.lfw import run_lfw

    cfg = config_for(args)
    if args.precision:
        cfg = replace(cfg, embed=replace(cfg.embed, precision=args.precision))
    if args.model:
        cfg = replace(cfg, embed=replace(cfg.embed, model=args.model))
    summary = run_lfw(cfg, args.images, args.pairs, report=args.report, progress=not args.json, calibration=args.calibrate)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {value}")
    return 0


def cmd_eval_calibrate(args: argparse.Namespace) -> int:
    from edge.eval.tail_fit import calibrate_all

    base = config_for(args)
    models = args.model or [f"{base.embed.model}_{base.embed.precision}"]
    summary = calibrate_all(base, args.data, models, args.out, progress=not args.json)
    print(json.dumps(summary, indent=None if args.json else 1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.cli.demo import run_demo

    return run_demo(config_for(args), args.assets, realtime=not args.fast)


def _add_calibrate(ev: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = ev.add_parser(
        "calibrate", help="fit the impostor-score tail of every labelled face in a data folder (thresholds file)",
        description="Scores every cross-identity pair of the faces under --data (the developers' data layout), "
        "fits the upper tail (generalised Pareto), validates it on held-out people and writes FILE.",
    )
    p.add_argument("--data", type=Path, required=True, help="folder laid out like ../shared/data")
    p.add_argument("--out", type=Path, required=True, help="thresholds file to update (models/thresholds.toml)")
    p.add_argument("--model", action="append", default=None, help="embedder_precision, repeatable (default: [embed])")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_calibrate)


def _add_device_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`sync`, `zmq` and `config`: the device's links to the hub and its kiosks, and its config file."""
    from edge.cli.config import add_commands as add_config_commands
    from edge.cli.sync import add_commands as add_sync_commands
    from edge.cli.zmq_keys import add_commands as add_zmq_commands

    add_sync_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    add_zmq_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    add_config_commands(sub, DEFAULT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facegate", description="Face recognition for doors and kiosks, on the edge.")
    parser.add_argument("--version", action="version", version=f"facegate {_version()}")
    parser.add_argument("--config", type=Path, default=None, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="build and list models").add_subparsers(dest="models_command", required=True)
    p = models.add_parser("build", help="build every model from installed packages and committed files")
    p.add_argument("--force", action="store_true", help="rebuild even when up to date")
    p.add_argument("--models-dir", type=Path, default=None)
    p.set_defaults(func=cmd_models_build)
    p = models.add_parser("list", help="list built models (verifies checksums)")
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)

    p = sub.add_parser("embed", help="detect, align and embed the faces in images")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_embed)

    ev = sub.add_parser("eval", help="measure accuracy on public benchmarks").add_subparsers(dest="eval_command", required=True)
    p = ev.add_parser("lfw", help="LFW verification from raw images (detect → align → embed)")
    p.add_argument("--images", type=Path, required=True, help="LFW layout: DIR/Name/Name_0001.jpg")
    p.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt format")
    p.add_argument("--precision", choices=PRECISIONS, default=None)
    p.add_argument("--model", choices=tuple(EMBEDDERS), default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--report", type=Path, default=None, help="write an HTML report (ROC/DET, histograms)")
    p.add_argument(
        "--calibrate", type=Path, default=None, metavar="FILE",
        help="also score every cross-identity pair and store the thresholds per false-match rate in FILE "
        "(models/thresholds.toml is what [match] target_fmr reads)",
    )
    p.set_defaults(func=cmd_eval_lfw)
    _add_calibrate(ev)
    from edge.cli.liveness import add_eval_command
    add_eval_command(ev, config_for)

    from edge.cli.gallery import add_commands

    add_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    from edge.cli.run import add_commands as add_run_commands

    add_run_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    from edge.cli.audit import add_commands as add_audit_commands
    add_audit_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    from sync.hub.cli import add_commands as add_admin_commands
    add_admin_commands(sub, lambda handler: lambda args: handler(args, config_for(args)))
    _add_device_commands(sub)

    p = sub.add_parser("demo", help="enroll the bundled photos, identify the probes, run the daemon on the bundled clip")
    p.add_argument("--assets", type=Path, default=Path(__file__).resolve().parents[2] / "assets" / "demo")
    p.add_argument("--fast", action="store_true", help="play the clip as fast as possible instead of in real time")
    p.set_defaults(func=cmd_demo)
    _config_after_the_verb(parser)
    return parser


def _config_after_the_verb(parser: argparse.ArgumentParser) -> None:
    """Gives every leaf command its own `--config`, so `facegate run --config X` works as well as
    `facegate --config X run`. SUPPRESS: given after the verb it is the one used, else the
    top-level one (or its default) stands."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subparsers:
        for command in action.choices.values():
            _config_after_the_verb(command)
    if not subparsers and "--config" not in parser._option_string_actions:
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "long_running", False):  # `run`, `hub serve`: keys live in memory for months
            from edge.service.hardening import disable_core_dumps

            disable_core_dumps()
        return int(args.func(args))
    except FacegateError as exc:
        print(f"facegate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `facegate ... | head`: the reader left; exit quietly instead of a traceback.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stdout must stay open until exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
