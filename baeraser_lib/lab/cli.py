"""The `baeraser` command (a console script of `pip install -e .`; also `python -m baeraser_lib`).

    baeraser attack -p attack badnets -p trigger_size 5  # plant a backdoor (a victim in artifacts/)
    baeraser defend --model CKPT --arch NAME --data HOLDING --num-classes K --out DIR   # your own model
    baeraser report run [...]          # the notebooks through papermill → reports/ (see `runner`)
    baeraser sweep grids/cpu.yaml      # a grid of runs, locally or on Dask (see `sweep`)
"""

from __future__ import annotations

import sys

COMMANDS = {
    "attack": ("baeraser_lib.lab.attack_command", "plant a backdoor: train a victim into the artifact cache"),
    "defend": ("baeraser_lib.lab.defend_command", "defend a suspicious model with a little clean data"),
    "report": ("baeraser_lib.lab.runner", "run the notebooks and write HTML + JSON reports; index; tables"),
    "sweep": ("baeraser_lib.lab.sweep", "run a grid of notebook runs (grids/*.yaml)"),
    "artifacts": ("baeraser_lib.lab.artifacts_command", "seal the sidecars of an artifact cache written before sealing"),
}


def main(argv: list[str] | None = None) -> int:
    import importlib

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {k:<{width}}  {doc}" for k, (_, doc) in COMMANDS.items()]
        msg = "usage: baeraser COMMAND [ARGS]\n\ncommands:\n" + "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"baeraser: unknown command {argv[0]!r}\n{msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0 if argv else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
