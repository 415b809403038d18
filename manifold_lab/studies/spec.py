"""A study YAML, parsed and checked, expanded into grid points with self-describing run ids.

Keys (unknown keys are an error)::

    study: toy_fig2                       # name; output goes to <results>/<study>/
    run: toy                              # the run kind (manifold_lab.runs): config, notebook, files
    notebook: notebooks/toy_manifold.ipynb   # optional: the kind's notebook by default
    description: free text                # for the reader; not used
    base: {dist: spiral, loss: v}         # fixed notebook parameters
    grid: {D: [2, 8, 16, 512], pred: [x, eps, v], seed: [0]}   # the product of these lists
    run_id: "D{D:04d}-{pred}pred-{loss}loss-s{seed}"           # format string over the parameters
    figures: [toy_grid, metric_vs_D]      # names registered in manifold_lab.plots
    workers: 2                            # default number of runs at once
    resources: {cpus_per_task: 1, mem_gb: 4, timeout_min: 60}   # per point on SLURM (--backend slurm)

``resources`` keys: cpus_per_task, gpus_per_node, nodes, mem_gb, timeout_min, partition, account,
signal_delay_s and sbatch (a mapping of extra sbatch options); ``--set resources.KEY=VALUE`` overrides one.

A grid list of mappings is a *linked axis*: each entry sets several parameters together, and the axis'
name is only a label (it is not a notebook parameter). For example, a training budget per patch size::

    grid:
      setting: [{patch: 8, steps: 600}, {patch: 2, steps: 4000}]
      pred: [x, eps, v]
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifold_lab.checks import ConfigError, check_keys
from manifold_lab.config import check_names, load_yaml, parse_set

STUDY_KEYS = ("study", "run", "notebook", "description", "base", "grid", "run_id", "figures", "workers", "resources")
RUNNER_PARAMS = ("out_dir", "threads")  # set by the runner for every point


@dataclass
class StudySpec:
    study: str
    notebook: Path
    run_id: str
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    workers: int = 1
    resources: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None
    run: str | None = None   # the run kind; None: a notebook of no registered kind (names checked only)

    def points(self) -> list[dict[str, Any]]:
        """Every grid point: base updated by one combination of the grid lists, in grid order (run ids
        checked to be distinct)."""
        out = self.grid_points()
        ids = [self.format_id(p) for p in out]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ConfigError(f"run_id {self.run_id!r} gives the same id to several grid points: {dup[:3]}; "
                              "add the varying parameters to run_id")
        return out

    def grid_points(self) -> list[dict[str, Any]]:
        """:meth:`points` without the run ids."""
        out = []
        for combo in itertools.product(*self.grid.values()):
            point = dict(self.base)
            for key, value in zip(self.grid, combo):
                if isinstance(value, dict):  # a linked axis sets its entry's parameters
                    point.update(value)
                else:
                    point[key] = value
            out.append(point)
        return out

    def linked(self) -> dict[str, list[str]]:
        """The linked axes: axis label -> the parameter names each of its entries sets."""
        return {k: list(v[0]) for k, v in self.grid.items() if isinstance(v[0], dict)}

    def parameter_names(self) -> list[str]:
        """Every notebook parameter the study sets: base keys, plain grid keys, keys of linked axes."""
        linked = self.linked()
        names = [*self.base, *(k for k in self.grid if k not in linked)]
        return names + [n for keys in linked.values() for n in keys if n not in names]

    def format_id(self, point: dict[str, Any]) -> str:
        try:
            return self.run_id.format(**point)
        except KeyError as e:
            raise ConfigError(f"run_id {self.run_id!r} names {e.args[0]!r}, which is not a study parameter; "
                              f"parameters: {', '.join(sorted(point))}") from None
        except (ValueError, TypeError) as e:
            raise ConfigError(f"run_id {self.run_id!r} cannot format {point}: {e}") from None

    def override(self, assignments: list[str]) -> None:
        """Apply ``key=value`` strings (values parsed as YAML): a grid key gets the new list (a scalar
        becomes a one-element list); any other key goes into base.

        A parameter of a linked axis keeps the axis' entries that have that value (``patch=2``); when no
        entry has it, the value is set in every entry (``steps=10``).
        """
        for a in assignments:
            key, value = parse_set(a)
            if key.startswith("resources."):
                self.resources[key.split(".", 1)[1]] = value
                continue
            axis = next((label for label, keys in self.linked().items() if key in keys), None)
            if key in self.grid:
                self.grid[key] = value if isinstance(value, list) else [value]
                _check_grid(self.grid, f"--set {a}")
            elif axis is not None:
                entries = self.grid[axis]
                kept = [e for e in entries if e[key] == value]
                self.grid[axis] = kept or [{**e, key: value} for e in entries]
            else:
                self.base[key] = value


def load_study(path: str | Path) -> StudySpec:
    """Read and check a study YAML (see the module docstring). Raises ConfigError on any bad key or value."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study YAML must be a mapping with keys {', '.join(STUDY_KEYS)}")
    check_keys(f"study {path}", raw, STUDY_KEYS)
    for key in ("study", "run_id"):
        if key not in raw:
            raise ConfigError(f"{path}: missing required key {key!r}")
    grid = raw.get("grid") or {}
    _check_grid(grid, str(path))
    kind, nb = _kind_and_notebook(raw, path)
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{path}: workers must be a positive integer, got {workers!r}")
    return StudySpec(study=str(raw["study"]), notebook=nb, run_id=str(raw["run_id"]),
                     base=dict(raw.get("base") or {}), grid={k: list(v) for k, v in grid.items()},
                     figures=list(raw.get("figures") or []), workers=workers,
                     resources=dict(raw.get("resources") or {}), source=path, run=kind)


def _kind_and_notebook(raw: dict, path: Path) -> tuple[str | None, Path]:
    """The study's run kind and notebook: ``run:`` names the kind (its notebook unless ``notebook:`` is given);
    without ``run:``, the kind whose notebook ``notebook:`` names, if any."""
    from manifold_lab.runs import registry

    if "run" not in raw and "notebook" not in raw:
        raise ConfigError(f"{path}: missing required key 'run' (one of {', '.join(registry.RUNS)})")
    kind = registry.get(str(raw["run"])) if "run" in raw else None
    if "notebook" not in raw:
        return kind.name, kind.notebook
    nb = Path(raw["notebook"])
    if not nb.is_absolute() and not nb.exists() and (path.parent.parent / nb).exists():
        nb = path.parent.parent / nb  # relative to the repository that holds studies/
    if kind is None:
        kind = registry.kind_of_notebook(nb)
    elif kind.notebook_name != nb.name:
        raise ConfigError(f"{path}: notebook {nb.name} is not the notebook of run kind {kind.name!r} "
                          f"({kind.notebook_name}); drop notebook: or fix run:")
    return (kind.name if kind else None), nb


def _check_grid(grid: dict, where: str) -> None:
    """Every grid value is a non-empty list; a list of mappings (a linked axis) has entries with the same
    keys, none of which is another grid key or a key of another linked axis."""
    seen: dict[str, str] = {}
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"{where}: grid[{k!r}] must be a non-empty list, got {v!r}")
        kinds = {isinstance(e, dict) for e in v}
        if kinds == {False}:
            continue
        if kinds != {True}:
            raise ConfigError(f"{where}: grid[{k!r}] mixes mappings and plain values: {v!r}; a linked axis "
                              "holds only mappings, e.g. [{patch: 8, steps: 600}, {patch: 2, steps: 4000}]")
        keys = list(v[0])
        for e in v:
            if list(e) != keys:
                raise ConfigError(f"{where}: the entries of linked axis grid[{k!r}] must set the same parameters "
                                  f"{keys}; got {list(e)} in {e!r}")
        for n in keys:
            other = n if n in grid else seen.get(n)
            if other is not None:
                raise ConfigError(f"{where}: parameter {n!r} of linked axis grid[{k!r}] is also set by "
                                  f"grid[{other!r}]")
            seen[n] = k


def notebook_parameters(spec: StudySpec) -> dict[str, Any]:
    """The notebook's parameter names: for a study of a run kind, its config's fields plus the runner's (the
    parameters cell is exactly these: tests/test_packaging.py), without starting papermill; otherwise what
    papermill reads from the cell tagged 'parameters'."""
    if spec.run is not None:
        from manifold_lab.config import field_names
        from manifold_lab.runs import registry

        return dict.fromkeys([*field_names(registry.get(spec.run).config), *RUNNER_PARAMS])
    import papermill

    return papermill.inspect_notebook(str(spec.notebook))


def check_against_notebook(spec: StudySpec) -> dict[str, Any]:
    """Check the notebook exists and knows every base/grid parameter; return its parameters."""
    if not spec.notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {spec.notebook} (named in {spec.source})")
    params = notebook_parameters(spec)
    if not params:
        raise ConfigError(f"{spec.notebook} has no cell tagged 'parameters'")
    check_names(spec.parameter_names(), params, f"study {spec.source} (parameters of {spec.notebook})")
    missing = [p for p in RUNNER_PARAMS if p not in params]
    if missing:
        raise ConfigError(f"{spec.notebook}: its parameters cell must define {', '.join(missing)}")
    if not set(spec.figures) <= declared_figures():       # only then import every plot module to be sure
        from manifold_lab.plots import figure_registry

        reg = figure_registry()
        for name in spec.figures:
            if name not in reg:
                raise ConfigError(f"unknown figure {name!r} in {spec.source}; allowed: {', '.join(sorted(reg))}")
    return params


def declared_figures() -> set[str]:
    """The figure names registered with a literal ``@register("name")`` in manifold_lab/plots/*.py, read from
    the source without importing matplotlib (a study is checked in a fraction of a second)."""
    import ast
    import importlib.util

    names: set[str] = set()
    for folder in importlib.util.find_spec("manifold_lab.plots").submodule_search_locations:
        for path in Path(folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register" and node.args
                        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    names.add(node.args[0].value)
    return names
