"""The ``dlbench`` command.

``fit``, ``validate``, ``test`` and ``predict`` go to LightningCLI (see :mod:`dlbench.runner`); the other
subcommands are plain argparse commands. ``dlbench --help`` and ``dlbench list`` import no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from dlbench import __version__, registry
from dlbench.errors import DlbenchError
from dlbench.runner import SUBCOMMANDS, debug_enabled

HELP = f"""dlbench {__version__}: deep-learning architectures as plugins on the Lightning Trainer.

usage: dlbench <command> [options]

Training (LightningCLI: --config FILE, --print_config, dotted overrides):
  fit --model NAME [--data NAME]     train, then test the best checkpoint
  validate | test | predict --model NAME --ckpt_path FILE
                                     evaluate or predict with a checkpoint

Plugins:
  list [--json] [--datasets]         every installed plugin (or dataset) and where it comes from
  info NAME                          a plugin's data, metric, every argument, an example

Comparing runs:
  compare [DIR ...]                  one row a run: differing hyperparameters, best and final monitor value,
                                     epochs, time, parameters, status (--sort, --filter, --format, --plot)
  bench --models a,b | --kind KIND   train each model for each seed, then write a leaderboard (--seeds,
                                     --max_epochs | --max_time, --data, --output; -- extra fit arguments)

Beyond a runner:
  sweep --model NAME --param model.lr=float:1e-4:1e-2:log ...   hyperparameter search (Optuna), resumable
  export RUN_DIR --format onnx|torchscript                       export and check against PyTorch's outputs
  compress RUN_DIR --method prune|quantize|distill               smaller model; one table of metric, params,
                                                                 file size, CPU latency before and after
  new-plugin NAME [DIR]                                          write a complete third-party plugin package

Examples:
  dlbench fit --model lstm
  dlbench fit --model lstm --model.hidden_size 128 --trainer.max_epochs 20
  dlbench fit --config lightning_logs/lstm/version_0/config.yaml
  dlbench compare --filter plugin=lstm --sort val/rmse --plot curves.png
  dlbench bench --models lstm,rnn --seeds 3 --max_epochs 20
  tensorboard --logdir lightning_logs

Add --debug (or set DLBENCH_DEBUG=1) to see full tracebacks. Set {registry.DISABLE_ENV}=1 to load only
the built-in plugins.
"""


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def _entry_json(e: registry.Entry) -> dict:
    out = {"name": e.name, "qualified_name": e.qualified, "distribution": e.dist, "version": e.version,
           "entry_point": e.value, "location": e.location, "broken": e.broken, "error": e.error}
    if e.spec is not None:
        spec = e.spec
        out.update(summary=spec.summary, data_kind=spec.data_kind)
        if e.group == registry.PLUGINS:
            out.update(default_data=spec.data_name, data_source=spec.data_source, monitor=spec.monitor,
                       mode=spec.mode, model=spec.model, datamodule=spec.datamodule)
        else:
            out.update(source=spec.source, generated=spec.generated, datamodule=spec.datamodule)
    return out


def cmd_list(args: argparse.Namespace) -> int:
    group = registry.DATASETS if args.datasets else registry.PLUGINS
    found = registry.entries(group)
    if args.json:
        print(json.dumps([_entry_json(e) for e in found], indent=2))
        return 0
    names = [e.name for e in found]
    rows = []
    for e in found:
        shown = e.qualified if names.count(e.name) > 1 else e.name
        provider = f"{e.dist} {e.version}"
        if e.broken:
            rows.append([shown, f"BROKEN: {e.error}", "?", "?", provider] if group == registry.PLUGINS
                        else [shown, f"BROKEN: {e.error}", "?", provider])
        elif group == registry.PLUGINS:
            rows.append([shown, e.spec.summary, e.spec.data_kind, e.spec.data_name, provider])
        else:
            rows.append([shown, e.spec.summary, e.spec.data_kind, provider])
    header = ["name", "summary", "data kind", "default data", "provided by"] if group == registry.PLUGINS \
        else ["name", "summary", "data kind", "provided by"]
    print(_table(rows, header))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        print(f"\nRegistered by more than one distribution: {', '.join(dupes)}. Pick one as DIST:NAME.")
    if any(e.broken for e in found):
        print("\nBroken entries cannot run; the others are unaffected.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from dlbench.info import describe  # imports the plugin's classes

    print(describe(args.name))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlbench", add_help=False)
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("list", help="list installed plugins")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--datasets", action="store_true", help="list datasets instead of plugins")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="describe one plugin")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)
    from dlbench import bench, compare  # light modules: what they need heavy is imported when a command runs

    compare.add_arguments(sub.add_parser("compare", prog="dlbench compare", help="compare runs in a table"))
    bench.add_arguments(sub.add_parser("bench", prog="dlbench bench", help="train models over seeds, rank them"))
    from dlbench import export, scaffold, sweep  # light too: torch and optuna are imported when a command runs

    for module in (sweep, export, scaffold):
        module.add_parser(sub)
    return parser


def dispatch(argv: list[str]) -> int:
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    if argv[0] == "--version":
        print(f"dlbench {__version__}")
        return 0
    if argv[0] in SUBCOMMANDS:
        from dlbench.runner import run

        return run(argv[0], argv[1:])
    if argv[0] == "compress":
        from dlbench.compress import run as compress  # imports torch and Lightning: only for this command

        return compress(argv[1:])
    parser = _parser()
    known = {"list", "info", "compare", "bench", "sweep", "export", "compress", "new-plugin"}
    if argv[0] not in known:
        import difflib

        close = difflib.get_close_matches(argv[0], [*SUBCOMMANDS, *known], n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise DlbenchError(f"unknown command {argv[0]!r}.{hint} Run 'dlbench --help' for the commands.")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = debug_enabled(argv)
    try:
        return dispatch(argv)
    except DlbenchError as err:
        if debug:
            traceback.print_exc()
        print(f"dlbench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dlbench: interrupted.", file=sys.stderr)
        return 130
