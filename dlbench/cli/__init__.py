"""The ``dlbench`` command.

``fit``, ``validate`` and ``test`` go to LightningCLI (see :mod:`dlbench.train.target`); the other
subcommands are plain argparse commands. ``dlbench --help`` and ``dlbench list`` import no torch.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import textwrap
import traceback

from dlbench.core import registry
from dlbench.core.conventions import DEBUG_ENV
from dlbench.core.conventions import VERSION as __version__
from dlbench.core.errors import DlbenchError, Interrupted
from dlbench.train.target import SUBCOMMANDS, debug_enabled, parse_target

LIST_WIDTH = 100
"""Width of 'dlbench list' where the terminal's is unknown (a pipe, a file)."""
TRAINING = {
    "fit": "train a plugin, then test its best checkpoint",
    "validate": "evaluate a checkpoint on the validation split",
    "test": "evaluate a checkpoint on the test split",
}
EXAMPLES = """examples:
  dlbench fit --model lstm
  dlbench fit --model lstm --model.hidden_size 128 --trainer.max_epochs 20
  dlbench fit --model lstm --help                        LightningCLI's options: trainer, config, dlbench's
  dlbench info lstm                                      the plugin's data, metric and every argument
  dlbench test --run lightning_logs/lstm/version_0       test a run's best checkpoint
  dlbench compare --filter plugin=lstm --sort val/rmse --plot curves.png
  tensorboard --logdir lightning_logs

{disable}=1 loads only the built-in plugins."""

def _table(rows: list[list[str]], header: list[str], width: int | None = None, wrap: int | None = None) -> str:
    """Columns padded to their widest cell; with ``width``, column ``wrap`` (the free text) is wrapped so every line
    fits in ``width`` characters, continued lines indented under it."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    if width is not None and wrap is not None:
        others = sum(w for i, w in enumerate(widths) if i != wrap) + 2 * (len(widths) - 1)
        widths[wrap] = max(min(widths[wrap], width - others), 24)
    lines = []
    for cells in [header, ["-" * w for w in widths], *rows]:
        parts = [[str(c)] for c in cells]
        if wrap is not None:
            parts[wrap] = textwrap.wrap(str(cells[wrap]), widths[wrap], break_long_words=True) or [""]
        for k in range(max(len(p) for p in parts)):
            line = "  ".join(f"{(p[k] if k < len(p) else ''):<{w}}" for p, w in zip(parts, widths, strict=True))
            lines.append(line.rstrip())
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
    print(_table(rows, header, width=shutil.get_terminal_size((LIST_WIDTH, 24)).columns, wrap=1))
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        print(f"\nRegistered by more than one distribution: {', '.join(dupes)}. Pick one as DIST:NAME.")
    if any(e.broken for e in found):
        print("\nBroken entries cannot run; the others are unaffected.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from dlbench.cli.info import describe  # imports the plugin's classes

    print(describe(args.name))
    return 0


def _training_parser(sub: argparse._SubParsersAction, name: str, summary: str) -> None:
    """A documentation parser for a LightningCLI subcommand: the options dlbench adds before LightningCLI reads
    the rest of the line (LightningCLI's: ``dlbench NAME --model PLUGIN --help``)."""
    p = sub.add_parser(name, help=summary, prog=f"dlbench {name}", description=f"{summary[0].upper()}{summary[1:]}. "
                       "LightningCLI reads the line: --config FILE, --print_config, dotted overrides validated against "
                       f"the classes' typed signatures. LightningCLI's options: dlbench {name} --model NAME --help; a "
                       "plugin's own arguments: dlbench info NAME.")
    p.add_argument("--model", metavar="NAME", help="plugin to run (dlbench list), or a LightningModule class path")
    p.add_argument("--data", metavar="NAME",
                   help="registered dataset of the plugin's data kind (dlbench list --datasets)")
    p.add_argument("--config", "-c", metavar="FILE", action="append", help="LightningCLI config file(s)")
    if name == "fit":
        p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run in its own directory")
    else:
        p.add_argument("--run", metavar="RUN_DIR", help="a trained run: its config, and its best checkpoint unless "
                                                        "--ckpt_path says otherwise")
    p.add_argument("--ckpt_path", metavar="FILE|best|last",
                   help="checkpoint to start from or evaluate; best and last name the files of the run given by --run "
                        "or by --config RUN_DIR/config.yaml")


def _parser() -> argparse.ArgumentParser:
    """The whole command line: dlbench --help is this parser's help."""
    parser = argparse.ArgumentParser(
        prog="dlbench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"dlbench {__version__}: deep-learning architectures as plugins on the Lightning Trainer.",
        epilog=EXAMPLES.format(disable=registry.DISABLE_ENV))
    parser.add_argument("--version", action="version", version=f"dlbench {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show full tracebacks (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="<command>")
    for name, summary in TRAINING.items():
        _training_parser(sub, name, summary)
    p = sub.add_parser("list", help="every installed plugin (or dataset) and where it comes from",
                       description="Every installed plugin: name, summary, data kind, default data, distribution. "
                                   "Answers from package metadata and specs without importing torch.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--datasets", action="store_true", help="list datasets instead of plugins")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="a plugin's data, metric and every argument", description="A plugin's data "
                       "source and licence, monitor metric, and every argument with type, default and help.")
    p.add_argument("name", help="plugin name (dlbench list)")
    p.set_defaults(func=cmd_info)
    from dlbench.runs import bench, compare  # light modules: what they need heavy is imported when a command runs

    compare.add_arguments(sub.add_parser(
        "compare", prog="dlbench compare", help="compare runs in a table (and a plot)",
        description="Runs grouped by dataset and monitor, best first: what was set differently, the best value, "
                    "the test score beside its baseline, status and evaluations, fitted to the terminal; read back "
                    "with TensorBoard's own reader."))
    bench.add_arguments(sub.add_parser(
        "bench", prog="dlbench bench", help="train models over seeds, then write a leaderboard",
        description="Train each model with each seed as an ordinary run, each in its own process, then write "
                    "leaderboard.md and leaderboard.csv."))
    from dlbench.tools import export, predict, scaffold, serve, sweep  # light: torch is imported when a command runs

    for module in (predict, serve, sweep, export):
        module.add_parser(sub)
    # compress imports torch to define its callbacks: its own parser answers 'dlbench compress --help'.
    sub.add_parser("compress", add_help=False, help="a smaller model (prune, quantize, distill) and one table of "
                   "metric, parameters, file size and CPU latency before and after")
    scaffold.add_parser(sub)
    parser.set_defaults(commands=tuple(sub.choices))
    return parser


def train(subcommand: str, args: list[str]) -> int:
    """``fit``, ``validate``, ``test``: LightningCLI on the plugin the command line names."""
    target = parse_target(subcommand, args)
    if target.done:
        print(target.done)
        return 0
    from dlbench.train.lightning_cli import build_cli  # imports torch and Lightning: only now that the target is known

    return build_cli(subcommand, target)


def _asks_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in args)


def _names_target(args: list[str]) -> bool:
    return any(a.split("=")[0] in ("--model", "--config", "-c", "--run", "--resume") for a in args)


def dispatch(argv: list[str]) -> int:
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] == "help":
        argv = ["--help"]
    if argv[0] in SUBCOMMANDS and not (_asks_help(argv[1:]) and not _names_target(argv[1:])):
        return train(argv[0], argv[1:])
    if argv[0] == "compress":
        from dlbench.tools.compress import run as compress  # imports torch and Lightning: only for this command

        return compress(argv[1:])
    parser = _parser()
    commands = parser.get_default("commands")
    if not argv[0].startswith("-") and argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], commands, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise DlbenchError(f"unknown command {argv[0]!r}.{hint} Run 'dlbench --help' for the commands.")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if getattr(args, "func", None) is None:  # 'dlbench fit --help' with no plugin named, or no command at all
        parser.parse_args([*argv[:1], "--help"] if args.command else ["--help"])
        return 0
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = debug_enabled(argv)
    try:
        return dispatch(argv)
    except DlbenchError as err:
        if debug:
            traceback.print_exc()
        print(f"dlbench: {err}" if isinstance(err, Interrupted) else f"dlbench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("dlbench: interrupted.", file=sys.stderr)
        return 130
