"""One import direction: walk every module's imports (lazy ones inside functions included, from the AST)
and fail on a cycle or on a module importing from a higher layer.

The layers, lowest first; a module may import its own layer and the ones below it:

0 ground   checks, io, paper, cost, paths,          errors, atomic files, the paper's numbers and costs, roots,
           run_files, seeds                       the run-folder schema, seeds
1 core     param, schedule, device, config, nets/, data/    the algebra, samplers, networks, data
2          denoiser, sample, metrics/, plots/     the objective, ODE sampling, measurements, drawing
3          train/, evaluate/                      the training core and its entries; sampling, FID, sweeps
4 runs     toy, image_study, image_id, intrinsic, memorisation, imagenet_study, runs/
5          studies/, bridge, explore, report     the runner, backends, summary; analyses and views over results
6          cli, __main__                          commands
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "manifold_lab"
LAYERS = [
    ("ground", {"checks", "io", "paper", "cost", "paths", "run_files", "seeds"}),
    ("core", {"param", "schedule", "device", "config", "nets", "data"}),
    ("objective, sampling, metrics, plots", {"denoiser", "sample", "metrics", "sample_complexity", "plots"}),
    ("train, evaluate", {"train", "evaluate"}),
    ("runs", {"toy", "image_study", "image_id", "id_accuracy", "intrinsic", "memorisation", "imagenet_study", "runs"}),
    ("studies", {"studies", "bridge", "explore", "explore_widgets", "report"}),
    ("cli", {"cli", "__main__"}),
]


def layer_of(module: str) -> int | None:
    """The layer index of ``manifold_lab.<first>...`` (None: the package itself or an unplaced module)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return next((i for i, (_, names) in enumerate(LAYERS) if parts[1] in names), None)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str], root: Path = PACKAGE) -> set[str]:
    """The package modules ``path`` imports anywhere in its body (top level, functions, classes)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            # `from a.b import c`: c may be a module (a.b.c) or a name in a.b
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:        # `import manifold_lab.x.y` of a name: its nearest module
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in files}
    return {module_name(p, package): imports_of(p, modules, package) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. Imports of a package's __init__ by its own modules are
    real edges too (Python runs the package first)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, targets in sorted(graph.items()):
        for t in sorted(targets):
            lm, lt = layer_of(m), layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{m} ({LAYERS[lm][0]}) imports {t} ({LAYERS[lt][0]})")
    return bad


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if m != "manifold_lab" and layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS in {__file__}): {unplaced}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Upward imports still in the tree, each with the change that removes it. Nothing else may be added here:
# once the change lands, its line must go (the test fails on a listed import that no longer exists).
KNOWN_UPWARD: set[str] = set()   # none left; an entry here must name why it cannot be fixed yet


def test_no_module_imports_a_higher_layer():
    bad = upward_imports(import_graph())
    new = [b for b in bad if b not in KNOWN_UPWARD]
    gone = sorted(KNOWN_UPWARD - set(bad))
    assert not new, "imports against the layer order:\n" + "\n".join(new)
    assert not gone, f"fixed, so remove them from KNOWN_UPWARD: {gone}"


def test_the_walk_sees_lazy_imports_cycles_and_upward_imports(tmp_path):
    """The checks themselves: a lazy (in-function) import closing a cycle, and an upward import, are found."""
    pkg = tmp_path / "manifold_lab"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("from manifold_lab.train.b import X\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from . import a\n    return a\nX = 1\n")
    (pkg / "param.py").write_text("import manifold_lab.train.a\n")
    graph = import_graph(pkg)
    assert graph["manifold_lab.train.b"] == {"manifold_lab.train.a"}
    assert find_cycle(graph) in (["manifold_lab.train.a", "manifold_lab.train.b", "manifold_lab.train.a"],
                                 ["manifold_lab.train.b", "manifold_lab.train.a", "manifold_lab.train.b"])
    assert upward_imports(graph) == ["manifold_lab.param (core) imports manifold_lab.train.a (train, evaluate)"]


@pytest.mark.parametrize("module", ["manifold_lab.train.checkpoint", "manifold_lab.nets.layers"])
def test_known_modules_are_walked(module):
    assert module in import_graph()


def test_a_runs_own_figures_need_no_seaborn(tmp_path):
    """What a study point's kernel imports to train and draw its own figures leaves seaborn (about 1.3 s with
    scipy.stats, once per point) to the study's figures, which import it where they draw with it."""
    import subprocess
    import sys

    code = """
import sys
import numpy as np
import matplotlib
matplotlib.use("Agg")
import manifold_lab.toy, manifold_lab.image_study, manifold_lab.memorisation
from manifold_lab.plots.images import save_image_grid
from manifold_lab.plots.memorisation import plot_memorisation_point
from manifold_lab.plots.toy import plot_toy_samples
from manifold_lab.plots.style import theme
plot_toy_samples(np.zeros((5, 2)), np.ones((5, 2)), "t")
save_image_grid(sys.argv[1], np.zeros((2, 3, 4, 4), np.uint8))
assert "seaborn" not in sys.modules, "seaborn imported"
with theme("whitegrid"):
    pass
assert "seaborn" in sys.modules   # the study figures' theme does import it
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "grid.png")],
                          capture_output=True, text=True, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
