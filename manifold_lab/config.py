"""Typed configs: one dataclass per kind of run, whose fields are at once YAML keys, notebook parameters
and command-line flags.

One spelling per knob. A field's name is its YAML key, its study / notebook parameter and, with ``_``
written ``-``, its flag (``batch_size`` -> ``--batch-size``). Spellings used before are refused with a
one-line :class:`ConfigError` that names the new one (:data:`RENAMED`), in a YAML, a ``--set`` and a flag.

* :func:`add_config_flags` / :func:`overrides_from_args`: a dataclass as argparse flags. Values stay
  strings until :func:`coerce` parses them by the field's type (lists and dicts take YAML or JSON).
* :func:`load_config`: YAML defaults, then overrides, each checked for unknown and renamed keys.
* :func:`config_from_namespace`: a notebook's parameters (its ``globals()``) -> the config.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from manifold_lab.checks import ConfigError, check_keys

# old spelling -> the new spelling(s); the one that is a field of the config in question is named
RENAMED: dict[str, tuple[str, ...]] = {
    "batch": ("batch_size",),
    "width": ("hidden_size",),
    "patch": ("patch_size",),
    "heads": ("num_heads",),
    "bottleneck": ("bottleneck_dim",),
    "mu": ("p_mean",),
    "sigma": ("p_std",),
    "ema": ("ema_decays",),
    "ema_decay": ("ema_decays",),
    "warmup": ("warmup_steps", "warmup_epochs"),
    "cfg": ("cfg_scale",),
    "num_samples": ("n_samples",),
    "image_size": ("img_size",),
}


def field_names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def defaults(cls) -> dict[str, Any]:
    """Every field's default value."""
    return {f.name: field_default(f) for f in dataclasses.fields(cls)}


def field_comments(cls) -> dict[str, str]:
    """The trailing ``# comment`` of each field in the class source: the help text of its flag."""
    names = set(field_names(cls))
    out = {}
    for line in inspect.getsource(cls).splitlines():
        head, _, comment = line.partition("#")
        name = head.split(":")[0].strip()
        if comment and name in names and ":" in head:
            out[name] = comment.strip()
    return out


def renamed_to(key: str, names: Iterable[str]) -> str | None:
    """The name among ``names`` that replaced the old spelling ``key`` (None if ``key`` is no old spelling)."""
    names = set(names)
    return next((new for new in RENAMED.get(key, ()) if new in names), None)


def check_names(keys: Iterable[str], allowed: Iterable[str], where: str) -> None:
    """A renamed key -> ConfigError naming its new spelling; any other unknown key -> ConfigError."""
    keys, allowed = list(keys), list(allowed)
    for key in keys:
        new = renamed_to(key, allowed) if key not in allowed else None
        if new is not None:
            raise ConfigError(f"{key!r} was renamed {new!r} (in {where})")
    check_keys(where, keys, allowed)


def check_config_keys(cls, keys: Iterable[str], where: str) -> None:
    """:func:`check_names` against the fields of ``cls``."""
    check_names(keys, field_names(cls), where)


# annotation name -> (accepted Python types, what the error says is allowed)
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string"),
    "bool": ((bool,), "true or false"), "list": ((list, tuple), "a list"), "tuple": ((list, tuple), "a list"),
    "dict": ((dict,), "a mapping"), "None": ((type(None),), "null"),
}


def _type_ok(value: Any, name: str) -> bool:
    types, _ = _TYPES[name]
    return isinstance(value, types) and not (isinstance(value, bool) and name in ("int", "float"))


def check_types(cls, values: dict, where: str = "config") -> None:
    """Each value has the type its field's annotation names (``int``, ``float`` (an int is fine), ``str``,
    ``bool``, ``list``, ``dict``, unions with ``None``); a field annotated otherwise is not checked here.
    A wrong type -> ConfigError naming the key, the value and the type allowed."""
    annotations = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    for key, value in values.items():
        names = [part.strip().split("[")[0] for part in annotations.get(key, "").split("|")]
        if key not in annotations or any(n not in _TYPES for n in names):
            continue
        if not any(_type_ok(value, n) for n in names):
            allowed = " or ".join(_TYPES[n][1] for n in names)
            raise ConfigError(f"{key} must be {allowed}, got {value!r} ({type(value).__name__})"
                              + (f" in {where}" if where else ""))


def config_from_values(cls, values: dict, where: str = "config"):
    """``cls(**values)`` after checking every key (see :func:`check_config_keys`) and every value's type
    (:func:`check_types`)."""
    check_config_keys(cls, values, where)
    check_types(cls, values, where)
    return cls(**values)


def config_from_namespace(cls, namespace: dict):
    """The config made of a notebook's parameters: every field of ``cls`` read from ``namespace``."""
    missing = [n for n in field_names(cls) if n not in namespace]
    if missing:
        raise ConfigError(f"the parameters cell lacks {', '.join(missing)} (fields of {cls.__name__})")
    values = {n: namespace[n] for n in field_names(cls)}
    check_types(cls, values, "the notebook's parameters")
    return cls(**values)


# YAML 1.2's floats (``1e-3``, ``5E-4``, ``.5``; PyYAML follows YAML 1.1, which reads ``1e-3`` as a
# string), digits may be grouped with ``_`` (``1_000``); ``.inf`` / ``.nan`` as before; no 1.1 sexagesimal
_INT_12 = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")   # no 1.1 octal 010, no 1:30
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                          |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)


def _yaml_loader():
    """A SafeLoader whose numbers follow YAML 1.2 (built once, on first use: yaml is imported lazily)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        float_tag, int_tag = "tag:yaml.org,2002:float", "tag:yaml.org,2002:int"
        Loader.yaml_implicit_resolvers = {
            ch: [(tag, rx) for tag, rx in rs if tag not in (float_tag, int_tag)]
            for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
        Loader.add_implicit_resolver(int_tag, _INT_12, list("-+0123456789"))
        Loader.add_implicit_resolver(float_tag, _FLOAT_12, list("-+0123456789."))   # after the int resolver
        _LOADER = Loader
    return _LOADER


_LOADER = None


def load_yaml(source: str | Path, where: str | None = None) -> Any:
    """Parse YAML text, or the file ``source`` when it is a Path, with YAML 1.2 numbers (``1e-3`` is a float).
    A syntax error is a one-line ConfigError naming ``where`` (default: the file) and the line."""
    import yaml

    if isinstance(source, Path):
        where = where or str(source)
        source = source.read_text()
    try:
        return yaml.load(source, Loader=_yaml_loader())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML in {where or 'text'}{line}: {problem}") from None


def parse_set(assignment: str) -> tuple[str, Any]:
    """One ``--set key=value`` string -> (key, value parsed as YAML); a ConfigError without the ``=``."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    return key, load_yaml(raw, where=f"--set {assignment}")


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


def check_numbers(obj) -> None:
    """Every ``int`` / ``float`` field of the dataclass ``obj`` holds a finite number of its type (None where
    the type allows it): ``'1e-3'``, ``nan``, ``inf``, ``True`` are a one-line ConfigError naming the field."""
    for f in dataclasses.fields(obj):
        typ = str(f.type).replace(" ", "")
        base = typ.split("|")[0]
        if base not in ("int", "float"):
            continue
        value = getattr(obj, f.name)
        if value is None and "None" in typ:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if base == "int":
            ok = number and math.isfinite(value) and float(value).is_integer()
            kind = "an integer"
        else:
            ok = number and math.isfinite(value)
            kind = "a finite number"
        if not ok:
            none = " or null" if "None" in typ else ""
            raise ConfigError(f"{f.name} must be {kind}{none}, got {value!r}")


def load_config(cls, yaml_path: str | Path | None = None, overrides: dict | None = None):
    """YAML defaults, then overrides; unknown or renamed keys in either raise ConfigError naming them."""
    values: dict = {}
    if yaml_path is not None:
        values.update(read_yaml(yaml_path))
        check_config_keys(cls, values, str(yaml_path))
    if overrides:
        check_config_keys(cls, overrides, "overrides")
        values.update(overrides)
    check_types(cls, values, str(yaml_path or "overrides"))
    return cls(**values)


# ---- flags ---------------------------------------------------------------------------------------------
def flag(name: str) -> str:
    """The flag of a field: ``n_samples`` -> ``--n-samples``."""
    return "--" + name.replace("_", "-")


def _type_of(cls, name: str) -> str:
    return str(cls.__dataclass_fields__[name].type)


def coerce(cls, name: str, raw: str | None) -> Any:
    """Parse a command-line string for field ``name`` of ``cls`` by the field's type annotation."""
    if raw is None:
        return None
    typ = _type_of(cls, name)
    base = typ.split("|")[0].strip()
    if isinstance(raw, list):        # a list field's flag takes one or more words (nargs="+")
        if len(raw) == 1 and base == "str":
            return raw[0]
        if len(raw) != 1:
            return [load_yaml(word, where=flag(name)) for word in raw]
        value = load_yaml(raw[0], where=flag(name))
        return value if isinstance(value, list) or "list" not in typ else [value]
    if "None" in typ and raw.strip().lower() in ("none", "null"):
        return None
    if base.startswith(("dict", "list", "tuple")):
        value = load_yaml(raw, where=flag(name))
        if not isinstance(value, dict if base.startswith("dict") else list):
            raise ConfigError(f"{flag(name)} takes a {base.split('[')[0]}, got {raw!r}")
        return value
    if base == "bool":
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{flag(name)} takes true/false, got {raw!r}")
    try:
        value = int(raw.replace("_", "")) if base == "int" else float(raw) if base == "float" else raw
    except ValueError:
        value = None
    if base in ("int", "float") and (value is None or not math.isfinite(value)):
        raise ConfigError(f"{flag(name)} takes {'an integer' if base == 'int' else 'a finite number'}, "
                          f"got {raw!r}")
    return value


class _Renamed(argparse.Action):
    """A flag that was renamed: using it is a one-line error naming the new flag."""

    def __init__(self, option_strings, dest, new: str, **kw):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kw)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        raise ConfigError(f"{option_string} was renamed {self.new}")


def add_renamed_flags(parser: argparse.ArgumentParser, renamed: dict[str, str]) -> None:
    """Refuse each old flag of ``renamed`` (old flag -> new flag) with a one-line error."""
    for old, new in renamed.items():
        parser.add_argument(old, dest=f"_renamed_{old.strip('-')}", action=_Renamed, new=new)


def add_config_flags(parser: argparse.ArgumentParser, cls, *, title: str = "config fields",
                     skip: Iterable[str] = ()) -> None:
    """One ``--flag`` per field of ``cls`` (kept as a string until :func:`overrides_from_args`), plus an
    error for each old spelling (RENAMED, and the snake_case flags used before: ``--n_samples``)."""
    comments, skip = field_comments(cls), set(skip)
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ = _type_of(cls, f.name)
        metavar = typ.split("|")[0].split("[")[0].strip().upper()
        text = f"{comments.get(f.name, f.name)} (default: {_show(field_default(f))})".replace("%", "%%")
        # a list takes several words (--interval 0.1 1.0) or one YAML list; a bool alone means true
        nargs = {"list": "+", "bool": "?"}.get(typ.split("|")[-1].strip().split("[")[0])
        group.add_argument(flag(f.name), dest=f"cfg_{f.name}", default=None, metavar=metavar, help=text,
                           nargs=nargs, **({"const": "true"} if nargs == "?" else {}))
    names = [n for n in field_names(cls) if n not in skip]
    old = {flag(o): flag(renamed_to(o, names)) for o in RENAMED if renamed_to(o, names)}
    old |= {"--" + n: flag(n) for n in names if "_" in n}
    add_renamed_flags(parser, old)


def add_run_command(sub, name: str, cls, run, *, help: str, description: str) -> None:
    """The command ``name`` of one run: a flag per field of ``cls``, ``--out``, ``--threads``, ``--no-progress``;
    it calls ``run(cls(...), out, progress=...)`` and prints the metrics it returns."""
    p = sub.add_parser(name, help=help, description=description, allow_abbrev=False)
    add_config_flags(p, cls, title=f"run ({cls.__name__} fields)")
    p.add_argument("--out", required=True, help="output folder of the run")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    def main(args) -> int:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from manifold_lab.io import check_writable_dir

        cfg = config_from_values(cls, overrides_from_args(args, cls), "flags")
        check_writable_dir(args.out, "--out")                # before any work
        metrics = run(cfg, args.out, progress=not args.no_progress)
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return 0
    p.set_defaults(func=main)


def config_to_flags(cfg, skip: Iterable[str] = ()) -> list[str]:
    """The command-line words that give every field of the dataclass instance ``cfg`` (the inverse of
    :func:`overrides_from_args`): a list as several words, a bool as true/false, None as null."""
    words: list[str] = []
    for f in dataclasses.fields(cfg):
        if f.name in set(skip):
            continue
        value = getattr(cfg, f.name)
        shown = [str(v) for v in value] if isinstance(value, (list, tuple)) else \
            ["null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)]
        words += [flag(f.name), *shown]
    return words


def _show(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def overrides_from_args(args: argparse.Namespace, cls) -> dict:
    """The fields given on the command line, parsed by type."""
    out = {}
    for name in field_names(cls):
        raw = getattr(args, f"cfg_{name}", None)
        if raw is not None:
            out[name] = coerce(cls, name, raw)
    return out
