"""No hidden global state: a toy run and a study figure inside a live Jupyter kernel leave the kernel's
matplotlib backend, its rcParams and the global torch RNG as they were; library code never switches the
backend at import."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
from nbclient import NotebookClient

PACKAGE = Path(__file__).resolve().parents[1] / "manifold_lab"

CELL = '''
import copy, tempfile
import matplotlib, matplotlib.pyplot as plt, pandas as pd, torch
plt.close(plt.figure())   # the backend is loaded at the first figure (inline: interactive on)
backend0, rc0 = matplotlib.get_backend(), copy.deepcopy(dict(matplotlib.rcParams))
torch.manual_seed(5); rng0 = torch.get_rng_state()
from manifold_lab.toy import ToyConfig, run_toy
from manifold_lab.plots.toy import fig_metric_vs_D
with tempfile.TemporaryDirectory() as d:
    run_toy(ToyConfig(D=4, steps=3, warmup_steps=1, batch_size=16, n_samples=64, sample_steps=2), d, progress=False)
rows = [dict(study="s", run_id=f"{p}{D}", D=D, pred=p, metric=m, value=0.1 * D)
        for D in (2, 4) for p in ("x", "v") for m in ("nn_dist", "off_manifold", "energy_distance")]
plt.close(fig_metric_vs_D(pd.DataFrame(rows), None))
changed = sorted(k for k, v in matplotlib.rcParams.items() if k != "backend" and repr(v) != repr(rc0.get(k)))
print("RESULT", backend0, "|", matplotlib.get_backend(), "|", changed, "|", torch.equal(torch.get_rng_state(), rng0))
'''


def test_toy_run_in_a_live_kernel_leaves_backend_rcparams_and_rng(monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)       # the kernel picks its own (inline) backend
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    NotebookClient(nb, kernel_name="python3", timeout=300).execute()
    text = "".join(o.get("text", "") for o in nb.cells[0].outputs if o.get("name") == "stdout")
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT"))
    before, after, changed, rng_same = (s.strip() for s in line[len("RESULT"):].split("|"))
    assert "inline" in before, f"the kernel did not start with the inline backend: {before}"
    assert after == before
    assert changed == "[]", f"rcParams changed by the run: {changed}"
    assert rng_same == "True", "the run reseeded the global torch RNG"


def test_no_backend_switch_or_global_theme_in_the_package():
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in ("use", "set_theme", "set_style", "switch_backend") and \
                    isinstance(node.func.value, ast.Name) and node.func.value.id in ("matplotlib", "sns", "plt"):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.func.value.id}.{node.func.attr}")
    assert not found, found
