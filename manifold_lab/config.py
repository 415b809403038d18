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
from pathlib import Path
from typing import Any, Iterable

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


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(data).__name__}")
    return data


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
    if "None" in typ and raw.strip().lower() in ("none", "null"):
        return None
    if base.startswith(("dict", "list", "tuple")):
        import yaml

        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{flag(name)} takes a YAML/JSON {base}, got {raw!r} ({e})") from None
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
        return int(raw) if base == "int" else float(raw) if base == "float" else raw
    except ValueError:
        raise ConfigError(f"{flag(name)} takes {'an integer' if base == 'int' else 'a number'}, "
                          f"got {raw!r}") from None


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
        metavar = _type_of(cls, f.name).split("|")[0].split("[")[0].strip().upper()
        text = f"{comments.get(f.name, f.name)} (default: {_show(field_default(f))})".replace("%", "%%")
        group.add_argument(flag(f.name), dest=f"cfg_{f.name}", default=None, metavar=metavar, help=text)
    old = {flag(o): flag(renamed_to(o, field_names(cls))) for o in RENAMED if renamed_to(o, field_names(cls))}
    old |= {"--" + n: flag(n) for n in field_names(cls) if "_" in n and n not in skip}
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
        metrics = run(config_from_values(cls, overrides_from_args(args, cls), "flags"), args.out,
                      progress=not args.no_progress)
        print(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        return 0
    p.set_defaults(func=main)


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
