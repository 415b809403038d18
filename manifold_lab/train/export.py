"""The ``export`` command: convert a checkpoint between our layout and the official JiT layout."""
from __future__ import annotations

from pathlib import Path

from manifold_lab.checks import ConfigError
from manifold_lab.train.checkpoint import LAST, OUR_KEYS, load_checkpoint
from manifold_lab.train.ckpt_file import write_checkpoint_file
from manifold_lab.train.official import PREFIX, to_official


def export(checkpoint: str, fmt: str, out: str) -> tuple[Path, dict, list[str]]:
    """Read ``checkpoint`` (ours or official, file or run folder) and write it in ``fmt`` ("official" or
    "ours") to ``out`` (a .pth file, or a folder that gets checkpoint-last.pth). Returns (file, object, notes)."""
    state, src = load_checkpoint(checkpoint)
    dest = Path(out) if Path(out).suffix == ".pth" else Path(out) / LAST
    if dest.exists() and dest.resolve() == src.resolve():
        raise ConfigError(f"--out {dest} is the checkpoint being read; choose another file")
    if fmt == "official":
        obj, notes = to_official(state)
    else:
        obj, notes = {k: state[k] for k in OUR_KEYS}, list(state["meta"]["notes"])
    return write_checkpoint_file(dest, obj), obj, notes


def summary(obj: dict) -> str:
    """What an exported object holds, in one line."""
    if "args" in obj:
        g = [len(x["params"]) for x in obj["optimizer"].get("param_groups", [])]
        return (f"official JiT layout: model, model_ema1, model_ema2 ({len(obj['model'])} tensors each, under "
                f"{PREFIX!r}), optimizer (groups [no_decay, decay] of {g} parameters), epoch {obj['epoch']}, "
                f"args ({obj['args'].model}, {obj['args'].img_size} px, {obj['args'].class_num} classes)")
    return (f"manifold_lab layout: model ({len(obj['model'])} tensors), EMAs {list(obj['ema'])}, step "
            f"{obj['step']}, epoch {obj['epoch']}")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="convert a checkpoint between our layout and the official JiT layout",
        description="Convert a checkpoint: --format official writes what LTH14/JiT's main_jit.py loads with "
                    "--resume (model, model_ema1, model_ema2 under 'net.', optimizer, epoch, args); --format "
                    "ours reads an official file into our layout. Both read ours or official input.",
        allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (its checkpoint-last.pth)")
    p.add_argument("--format", required=True, choices=("official", "ours"), help="layout to write")
    p.add_argument("--out", required=True,
                   help="output .pth file, or a folder (gets checkpoint-last.pth, as the official --resume expects)")
    p.set_defaults(func=main)


def main(args) -> int:
    path, obj, notes = export(args.checkpoint, args.format, args.out)
    for n in notes:
        print(f"note: {n}")
    print(f"wrote {path}: {summary(obj)}")
    return 0
