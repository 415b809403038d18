"""environment.yml and pyproject.toml pin the same versions; every notebook is thin and parameterised."""
import json
import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", r)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_environment_yml_mirrors_pyproject_pins():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = pyproject["dependencies"] + pyproject["optional-dependencies"]["test"]
    assert all("==" in d for d in deps), [d for d in deps if "==" not in d]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip) == _pins(deps)
    assert "-e ." in pip


def test_notebooks_are_thin_and_parameterised():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        src = ["".join(c["source"]) for c in code]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in code), nb_path
        assert len(code) <= 8, nb_path
        assert not any(re.search(r"^(def|class) ", s, re.M) for s in src), nb_path
        assert all(not c.get("outputs") for c in code), f"{nb_path}: strip outputs before committing"


def test_each_notebook_parameters_cell_is_exactly_its_config():
    """For every run kind of the registry, its notebook's parameters cell lists every field of the kind's config
    with the config's default (so a study can set any of them), plus the runner's out_dir and threads, and
    nothing else; and every notebook belongs to a kind, but the explorer (it trains nothing)."""
    import ast

    import papermill

    from manifold_lab.config import defaults
    from manifold_lab.runs import RUNS

    viewers = {"explore.ipynb"}                      # reads results; no run kind, no config
    assert {k.notebook_name for k in RUNS.values()} == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} - viewers
    for kind in RUNS.values():
        name, cls = kind.notebook_name, kind.config
        params = papermill.inspect_notebook(str(ROOT / "notebooks" / name))
        expected = defaults(cls)
        assert set(params) == set(expected) | {"out_dir", "threads"}, (name, set(params) ^ set(expected))
        for field, default in expected.items():
            assert ast.literal_eval(params[field]["default"]) == default, (name, field)
            assert params[field]["inferred_type_name"].split("[")[0] == str(
                cls.__dataclass_fields__[field].type).split("[")[0], (name, field)
