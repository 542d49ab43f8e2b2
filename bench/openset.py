"""Open-set identification on LFW through the daemon's gallery and threshold policy; one JSON object.

    .venv/bin/python bench/openset.py [--data ../shared/data] [--groups 10] [--model edgeface_xs_fp32]

Every LFW person of ../shared/data is a stranger exactly once: people are split at random into
`--groups` disjoint groups; for each, the group's people are never enrolled (all their photos
are stranger probes), everyone else is enrolled with one photo (the others are probes), and the
gallery grows through the sizes. The thresholds come from the shipped policy (`[match]
stranger_accept_rate`, target_fmr) applied to a calibration **re-fitted without the group's
people** (edge/eval/tail_fit.py on every other labelled face), so no stranger's score ever
helped set the threshold it is tested at. Counts are pooled over the groups.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config import Config
from edge.eval.faceset import config_for_model
from edge.eval.openset import held_out_openset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--model", default=None, help="embedder_precision (default: the shipped [embed])")
    parser.add_argument("--flip", action="store_true", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 500, 1000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = Config()
    if args.model:
        cfg = config_for_model(cfg, args.model)
    flip = cfg.embed.flip if args.flip is None else args.flip
    print(json.dumps(held_out_openset(cfg, args.data, args.groups, args.sizes, args.seed, flip)))


if __name__ == "__main__":
    main()
