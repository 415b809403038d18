"""The study runner: real papermill runs of the toy notebook, skip/recover, tidy summary, errors."""
from pathlib import Path

import pandas as pd
import pytest

from manifold_lab import io
from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.studies import results
from manifold_lab.studies.runner import run_study
from manifold_lab.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
TINY = ["D=[2]", "pred=[x,v]", "steps=20", "n_samples=200", "sample_steps=4", "batch_size=64"]


def tiny_fig2():
    spec = load_study(ROOT / "studies/toy_fig2.yaml")
    spec.override(TINY)
    return spec


def test_runner_runs_skips_and_recovers(tmp_path, capsys):
    spec = tiny_fig2()
    rep = run_study(spec, tmp_path, workers=2, progress=False)
    assert sorted(rep["ran"]) == ["D0002-spiral-d2-mlp-w256-vpred-vloss-s0", "D0002-spiral-d2-mlp-w256-xpred-vloss-s0"]
    assert rep["failed"] == [] and rep["skipped"] == []
    study = tmp_path / "toy_fig2"
    for rid in rep["ran"]:
        assert (study / rid / "metrics.json").is_file() and (study / rid / "notebook.ipynb").is_file()
    summary = pd.read_csv(study / "summary.csv")
    assert {"study", "run_id", "D", "pred", "loss", "seed", "metric", "value"} <= set(summary.columns)
    assert set(summary["metric"]) >= {"nn_dist", "off_manifold", "energy_distance"}
    assert len(summary) == 2 * summary["metric"].nunique()
    assert len(pd.read_parquet(study / "summary.parquet")) == len(summary)
    assert (study / "fig_toy_grid.png").stat().st_size > 10_000 and (study / "fig_metric_vs_D.png").is_file()

    # A batch killed half way: one run folder left without metrics.json, one stale partial folder.
    victim = study / rep["ran"][0]
    (victim / "metrics.json").unlink()
    stale = results.partial_dir(study, rep["ran"][1])
    stale.mkdir()
    (stale / "junk").write_text("half")
    rep2 = run_study(tiny_fig2(), tmp_path, workers=1, progress=False)
    assert rep2["ran"] == [victim.name] and rep2["skipped"] == [rep["ran"][1]]
    assert (victim / "metrics.json").is_file()
    assert not any(p.name.endswith(".partial") for p in study.iterdir() if p.name != stale.name)

    # Done is the kind's whole contract: a lost samples.npz, or a damaged run.json (named in one warning
    # line), makes the point run again; the summary still holds both.
    capsys.readouterr()
    (study / rep["ran"][1] / "samples.npz").unlink()
    (victim / "run.json").write_text("{not json")
    rep_d = run_study(tiny_fig2(), tmp_path, workers=2, progress=False)
    assert sorted(rep_d["ran"]) == sorted(rep["ran"]) and rep_d["failed"] == []
    err = capsys.readouterr().err
    assert err.count(f"warning: {victim / 'run.json'} is damaged") == 1, err
    assert (study / rep["ran"][1] / "samples.npz").is_file() and io.read_json(victim / "run.json")["params"]
    assert pd.read_csv(study / "summary.csv")["run_id"].nunique() == 2

    # The same run ids with a changed parameter (not in the id): the finished runs are stale, run again.
    changed = tiny_fig2()
    changed.override(["pred=[x]", "lr=0.003"])
    x_run = "D0002-spiral-d2-mlp-w256-xpred-vloss-s0"
    assert results.is_complete(study / x_run) and not results.is_current(study / x_run, changed.points()[0])
    before = set(results.kept_aside(study))               # the incomplete runs replaced above were kept aside
    rep3 = run_study(changed, tmp_path, workers=1, progress=False)
    assert rep3["ran"] == [x_run] and rep3["skipped"] == []
    assert io.read_json(study / rep3["ran"][0] / "run.json")["params"]["lr"] == 0.003
    kept = [p for p in results.kept_aside(study) if p not in before]   # the replaced run: kept, not deleted
    assert [p.name.split(".stale-")[0] for p in kept] == [x_run] and (kept[0] / "metrics.json").is_file()
    assert run_study(changed, tmp_path, workers=1, progress=False)["skipped"] == rep3["ran"]


def test_failed_point_does_not_look_finished(tmp_path):
    spec = tiny_fig2()
    spec.override(["pred=[x]", "lr=1.0e+30"])  # a valid config whose training diverges: the kernel raises
    rep = run_study(spec, tmp_path, workers=1, progress=False)
    assert len(rep["failed"]) == 1 and rep["ran"] == []
    rid = rep["failed"][0]
    assert not (tmp_path / "toy_fig2" / rid).exists()
    assert (results.partial_dir(tmp_path / "toy_fig2", rid) / "notebook.ipynb").is_file()


def write(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def test_yaml_errors_name_the_value(tmp_path, capsys):
    nb = ROOT / "notebooks/toy_manifold.ipynb"
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'grdi'.*allowed: base, description"):
        load_study(write(tmp_path, f"study: s\nnotebook: {nb}\nrun_id: a\ngrdi: {{D: [2]}}\n"))
    spec = load_study(write(tmp_path, f"study: s\nnotebook: {nb}\nrun_id: 'D{{D}}'\ngrid: {{D: [2], widht: [3]}}\n"))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'widht'.*allowed: D, batch_size"):
        run_study(spec, tmp_path, progress=False)
    for old, new in [("width", "hidden_size"), ("batch", "batch_size"), ("mu", "p_mean"), ("ema", "ema_decays")]:
        spec = load_study(write(tmp_path, f"study: s\nnotebook: {nb}\nrun_id: 'D{{D}}'\ngrid: {{D: [2]}}\n"))
        spec.override([f"{old}=1"])                                        # --set with an old spelling
        with pytest.raises(ConfigError, match=f"'{old}' was renamed '{new}'"):
            run_study(spec, tmp_path, progress=False)
    spec = load_study(write(tmp_path, "study: s\nnotebook: notebooks/nope.ipynb\nrun_id: a\n"))
    with pytest.raises(FileNotFoundError, match="notebook not found: notebooks/nope.ipynb"):
        run_study(spec, tmp_path, progress=False)
    spec = load_study(write(tmp_path, f"study: s\nnotebook: {nb}\nrun_id: 'D{{D}}'\ngrid: {{D: [2]}}\nfigures: [pie]\n"))
    with pytest.raises(ConfigError, match="unknown figure 'pie'.*toy_grid"):
        run_study(spec, tmp_path, progress=False)
    spec = load_study(write(tmp_path, f"study: s\nnotebook: {nb}\nrun_id: 'x'\ngrid: {{D: [2, 8]}}\n"))
    with pytest.raises(ConfigError, match="same id to several grid points"):
        spec.points()
    assert main(["study", str(tmp_path / "missing.yaml")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_override_replaces_grid_lists_and_base_values():
    spec = tiny_fig2()
    spec.override(["seed=[0,1,2]", "lr=0.01"])
    pts = spec.points()
    assert [p["seed"] for p in pts] == [0, 1, 2, 0, 1, 2] and all(p["lr"] == 0.01 for p in pts)
    with pytest.raises(ConfigError, match="--set expects key=value"):
        spec.override(["lr"])


LINKED = """study: s
notebook: notebooks/image_study.ipynb
run_id: "p{patch_size}-{pred}-n{steps}"
base: {hidden_size: 64}
grid:
  setting: [{patch_size: 8, steps: 600}, {patch_size: 2, steps: 4000}]
  pred: [x, eps]
"""


def test_linked_axis_sets_parameters_together(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = load_study(write(tmp_path, LINKED))
    assert [(p["patch_size"], p["steps"], p["pred"]) for p in spec.points()] == [
        (8, 600, "x"), (8, 600, "eps"), (2, 4000, "x"), (2, 4000, "eps")]
    assert all("setting" not in p and p["hidden_size"] == 64 for p in spec.points())
    assert sorted(spec.parameter_names()) == ["hidden_size", "patch_size", "pred", "steps"]
    from manifold_lab.studies.spec import check_against_notebook
    check_against_notebook(spec)  # the notebook knows patch_size and steps; "setting" is only a label

    spec.override(["patch_size=2"])  # a value some entries have: keep those entries
    assert spec.grid["setting"] == [{"patch_size": 2, "steps": 4000}]
    spec.override(["steps=10"])  # a value no entry has: set it in every entry
    assert [p["steps"] for p in spec.points()] == [10, 10]

    bad = {"mixes mappings and plain values": "[{patch_size: 8, steps: 600}, 2]",
           "must set the same parameters": "[{patch_size: 8, steps: 600}, {patch_size: 2}]",
           "'pred' of linked axis grid\\['setting'\\] is also set by grid\\['pred'\\]": "[{patch_size: 8, pred: x}]"}
    for message, value in bad.items():
        text = LINKED.replace("[{patch_size: 8, steps: 600}, {patch_size: 2, steps: 4000}]", value)
        with pytest.raises(ConfigError, match=message):
            load_study(write(tmp_path, text))
