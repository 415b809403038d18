"""The paper map (manifold_lab.paper.PAPER_MAP): every numbered figure and table has a row, no row is blank,
and every study a row names exists, loads, fits its notebook and has its figures registered."""
from __future__ import annotations

from pathlib import Path

import pytest

from manifold_lab.paper import PAPER_MAP
from manifold_lab.plots import figure_registry
from manifold_lab.studies.spec import check_against_notebook, load_study

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ["Fig. 2", "Fig. 4", "Fig. 6", "Fig. 7"] + [f"Table {i}" for i in range(2, 14)]
STUDIES = sorted({r[k] for r in PAPER_MAP for k in ("cpu", "full") if r[k]})


def test_every_required_item_has_one_nonblank_row():
    items = [r["item"] for r in PAPER_MAP]
    assert len(items) == len(set(items)) and set(REQUIRED) <= set(items)
    for r in PAPER_MAP:
        assert r["what"] and (r["cpu"] or r["full"] or r["none"]), r["item"]
        if not (r["cpu"] and r["full"]):
            assert r["none"], f"{r['item']}: a side without a study must say why"
        if r["full"]:
            assert r["cost"], f"{r['item']}: a full-scale study must state its expected cost"


@pytest.mark.parametrize("study", STUDIES)
def test_mapped_study_loads_and_draws(study, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_study(ROOT / "studies" / f"{study}.yaml")
    assert spec.study == study and spec.figures
    check_against_notebook(spec)
    assert set(spec.figures) <= set(figure_registry())


def test_full_scale_studies_run_shrunken_in_the_tests():
    """Each full-scale study of the map is one of those tests/test_imagenet_studies.py runs shrunken."""
    import test_imagenet_studies as mod  # tests/ is on the path (pytest's rootdir insertion)

    shrunken = set(mod.SHRINK) | set(mod.FROM_RUN) | {"imagenet_scale"}   # imagenet_scale: the scale_point fixture
    assert {r["full"] for r in PAPER_MAP if r["full"]} <= shrunken


def test_readme_holds_the_generated_paper_map():
    """The README's paper map is ``python -m manifold_lab report --paper-map``'s output (links into the
    gallery), not a hand copy that goes stale when PAPER_MAP changes."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "manifold_lab", "report", "--paper-map"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("| item | what |") and len(out.splitlines()) == len(PAPER_MAP) + 2
    assert out in (ROOT / "README.md").read_text(), \
        "README's paper map is stale: paste `python -m manifold_lab report --paper-map` into it"
