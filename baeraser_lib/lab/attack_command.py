"""`baeraser attack`: plant a backdoor from the command line (notebook 01's training, no report).

    baeraser attack -p attack badnets -p trigger_size 5 -p epochs 4      # → artifacts/victims/<hash>/

Parameters are notebook 01's names (read as YAML values) and map onto the configs through the one
mapping, `params`; unknown names are refused before anything loads. The victim lands in the
artifact cache (trained once, then found again); its folder holds `weights.safetensors` and a
`meta.json` with the true trigger, so it feeds `baeraser defend --model DIR/weights.safetensors
--eval-trigger DIR` directly.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from ..data import load_experiment_data
from ..errors import CheckpointError, ConfigError, DataNotFoundError
from ..params import ATTACK, TRAIN, attack_config, train_config
from ..train import LAYOUTS, PRECISIONS, pick_device
from ..victims import check_attack, obtain_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baeraser attack", description="Plant a backdoor (train a victim).")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                    help=f"a parameter of notebook 01: {', '.join(sorted(set(TRAIN) | set(ATTACK)))}")
    ap.add_argument("--artifacts", default="artifacts", help="the artifact cache (default artifacts/)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--holding-ratio", type=float, default=0.05)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                    help="bf16 autocast in training steps (auto: on CUDA only; CPU training stays fp32)")
    ap.add_argument("--layout", default="auto", choices=list(LAYOUTS), help="the memory layout training runs in")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    params = {k: yaml.safe_load(v) for k, v in args.param}
    unknown = sorted(set(params) - set(TRAIN) - set(ATTACK))
    try:
        if unknown:
            raise ConfigError(f"unknown parameter(s) {unknown}; baeraser attack takes {sorted(set(TRAIN) | set(ATTACK))}")
        train, attack = train_config(params), attack_config(params)
        check_attack(train, attack)
        data = load_experiment_data(train.dataset, args.data_root, args.holding_ratio, train.seed, train.train_subset)
        check_attack(train, attack, data.train)
        victim = obtain_model(train, attack, data, args.artifacts, pick_device(args.device),
                              progress=not args.no_progress, precision=args.precision, layout=args.layout)
    except (ConfigError, CheckpointError, DataNotFoundError) as err:
        print(f"baeraser attack: error: {err}", file=sys.stderr)
        return 2
    print(f"{'found' if victim.cached else 'trained'} victim {victim.path} "
          f"(target {victim.target_label}; weights.safetensors + meta.json with the trigger)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
