"""`python -m manifold_lab <command>`: each command lives in its own module with a ``register(subparsers)``.

Only the module of the command asked for is imported, so a broken or slow module never costs the others.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from manifold_lab.checks import ConfigError
from manifold_lab.runs.commands import command_table

# command -> (module, one-line help). The module's register(subparsers) adds the command's parser and sets
# ``func`` (called with the parsed args; returns an exit code or None).
# The run kinds' commands come from the run registry (manifold_lab.runs): toy, image, id, memorisation, ...
COMMANDS: dict[str, tuple[str, str]] = {
    **command_table(),
    "study": ("manifold_lab.studies.runner", "run a study grid with papermill and render its figures"),
    "train": ("manifold_lab.train.imagenet", "train a JiT on an ImageFolder (CPU, one GPU or torchrun DDP)"),
    "sample": ("manifold_lab.evaluate.generate", "class-balanced sampling from a JiT checkpoint"),
    "fid": ("manifold_lab.evaluate.fid", "FID/IS of a sample folder or npz against reference statistics"),
    "prepare-ref": ("manifold_lab.evaluate.ref_stats", "build FID reference statistics from an image folder"),
    "prepare-data": ("manifold_lab.data.shards", "write an ImageFolder's ADM crops into memory-mappable uint8 shards"),
    "sweep": ("manifold_lab.evaluate.sweep", "CFG x EMA sweep on 8K samples, then the best on 50K"),
    "export": ("manifold_lab.train.export", "convert a checkpoint to the official JiT layout or back"),
    "bridge": ("manifold_lab.bridge", "predict the image studies' pass/fail from the toy phase diagram"),
    "report": ("manifold_lab.report", "write the results gallery results/README.md from every study's summary"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with the subcommand ``command`` (all of them if None) registered."""
    parser = argparse.ArgumentParser(
        prog="python -m manifold_lab", description="Test the manifold hypothesis in denoising generative models.",
        epilog="commands:\n" + "\n".join(f"  {k:<12} {h}" for k, (_, h) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    modules = [COMMANDS[command][0]] if command in COMMANDS else list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "matplotlib" not in sys.modules:          # a command line draws off-screen; a live kernel keeps its backend
        os.environ.setdefault("MPLBACKEND", "Agg")
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command is None and argv and not argv[0].startswith("-"):
        print(f"error: unknown command {argv[0]!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        args = build_parser(command).parse_args(argv) if command else _top_level(argv)
        return int(args.func(args) or 0)
    except Exception as e:
        if not is_user_error(e):
            raise                               # a bug: keep the traceback
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2


# what a user's input causes besides ConfigError (which covers CheckpointError) and OSError (paths,
# permissions): YAML syntax, unreadable images, damaged archives, a diverged run, non-finite samples. Matched
# by class name so that no heavy module is imported here.
USER_ERROR_NAMES = {"YAMLError", "UnidentifiedImageError", "DecompressionBombError", "BadImageError",
                    "NonFiniteLossError", "NonFiniteSamplesError", "BadZipFile"}


def is_user_error(e: BaseException) -> bool:
    """True for an exception a user causes (printed as one ``error:`` line, exit 2); False for a bug."""
    if isinstance(e, (ConfigError, OSError)):
        return True
    return any(c.__name__ in USER_ERROR_NAMES for c in type(e).__mro__)


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line (an OSError names its file and reason)."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _top_level(argv):
    """No command given: show the command list (argparse exits)."""
    parser = argparse.ArgumentParser(
        prog="python -m manifold_lab", description="Test the manifold hypothesis in denoising generative models.",
        epilog="commands:\n" + "\n".join(f"  {k:<12} {h}" for k, (_, h) in COMMANDS.items())
        + "\n\n`python -m manifold_lab <command> --help` documents each command's flags.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS))
    parser.parse_args(argv)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
