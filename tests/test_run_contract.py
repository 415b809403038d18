"""The run contract: the registry, every point checked before anything runs, one writer, done = the kind's
whole contract, and a summary that is the study's (not the last call's). Fast: no kernel runs here (the
runner's real papermill runs are in test_study_runner.py)."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from manifold_lab import io
from manifold_lab.checks import ConfigError
from manifold_lab.cli import COMMANDS, build_parser, main
from manifold_lab.runs import RUNS, MissingRunFile, file_name, run_file
from manifold_lab.runs.writer import finish_run
from manifold_lab.studies import results, runner
from manifold_lab.studies.spec import load_study
from manifold_lab.toy import ToyConfig

ROOT = Path(__file__).resolve().parents[1]
FIG2 = ROOT / "studies" / "toy_fig2.yaml"


@pytest.mark.parametrize("setting, words", [
    ("pred=[x,score]", ["point D0002-spiral-d2-mlp-w256-scorepred-vloss-s0", "pred='score'", "allowed: x, eps, v"]),
    ("D=[abc]", ["D='abc'", "D must be an integer", "(str)"]),
    ("D=[1]", ["point D0001-spiral-d2-mlp-w256-xpred-vloss-s0", "D=1", "must be >= d"]),
])
def test_a_bad_point_is_one_line_before_anything_runs(setting, words, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["study", str(FIG2), "--set", setting, "--results-dir", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    assert not out.exists()            # no study folder, no claim, no run folder, no kernel
    assert main(["study", str(FIG2), "--set", setting, "--results-dir", str(out), "--status"]) == 2
    assert not out.exists()


def test_every_committed_study_names_its_kind_and_every_point_builds():
    for path in sorted((ROOT / "studies").glob("*.yaml")):
        spec = load_study(path)
        assert spec.run in RUNS, path
        assert spec.notebook.resolve() == RUNS[spec.run].notebook.resolve(), path
        assert runner.checked_points(spec), path


def test_run_or_notebook_must_agree(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("study: s\nrun: toy\nnotebook: notebooks/image_study.ipynb\nrun_id: a\n")
    with pytest.raises(ConfigError, match="not the notebook of run kind 'toy'"):
        load_study(p)
    p.write_text("study: s\nrun: tabular\nrun_id: a\n")
    with pytest.raises(ConfigError, match="unknown run kind 'tabular'; allowed: toy, image, intrinsic"):
        load_study(p)
    p.write_text("study: s\nrun: image\nrun_id: a\n")
    assert load_study(p).notebook.name == "image_study.ipynb"        # the kind's notebook by default


def test_every_kind_has_a_command():
    for kind in RUNS.values():
        assert kind.command in COMMANDS, kind.name
        parser = build_parser(kind.command)
        sub = parser._subparsers._group_actions[0].choices[kind.command]
        flags = {s for a in sub._actions for s in a.option_strings}
        if not kind.custom_command:
            fields = {f.name for f in dataclasses.fields(kind.config)}
            assert {"--" + n.replace("_", "-") for n in fields} <= flags and "--out" in flags, kind.name
    assert COMMANDS["memorisation"][0] == "manifold_lab.runs.commands" and COMMANDS["id"][0] == "manifold_lab.intrinsic"


def test_config_type_is_checked():
    from manifold_lab.config import config_from_values

    with pytest.raises(ConfigError, match=r"steps must be an integer, got 2\.5 \(float\)"):
        config_from_values(ToyConfig, {"steps": 2.5})
    with pytest.raises(ConfigError, match=r"ema_decays must be a list, got 0\.9"):
        config_from_values(ToyConfig, {"ema_decays": 0.9})
    assert config_from_values(ToyConfig, {"lr": 1}).lr == 1                 # an int is a number


# ---- one writer, done = the whole contract ------------------------------------------------------------------
def fake_toy_run(path: Path, params: dict, metrics: dict) -> None:
    """A finished toy run folder written through the one writer, plus the runner's run.json."""
    cfg = ToyConfig(**params)
    finish_run(path, cfg, metrics, kind="toy", tables={"curve.csv": pd.DataFrame({"step": [1], "loss": [0.5]})},
               arrays={"samples.npz": {"samples": np.ones((4, cfg.D)), "P": np.eye(cfg.D, cfg.d),
                                       "reference": np.ones((4, cfg.d))}},
               figures={"fig_samples.png": lambda p: Path(p).write_bytes(b"\x89PNG fake")})
    io.write_json(path / "run.json", {"run_id": path.name, "params": params, "wall_s": 1.0})


def test_writer_order_and_contract(tmp_path):
    fake_toy_run(tmp_path / "r", {"D": 8}, {"nn_dist": 0.1})
    assert results.done_reason(tmp_path / "r", "toy", {"D": 8}) is None
    cfg = io.read_json(tmp_path / "r" / "config.json")
    assert cfg["run"] == "toy" and cfg["D"] == 8 and cfg["derived"] == {}
    with pytest.raises(TypeError, match="measured numbers only"):
        finish_run(tmp_path / "s", ToyConfig(), {"ema": "ema1"}, kind="toy")
    with pytest.raises(RuntimeError, match="must hold samples.npz, curve.csv, fig_samples.png before metrics.json"):
        finish_run(tmp_path / "s", ToyConfig(), {"nn_dist": 1.0}, kind="toy")
    assert not (tmp_path / "s" / "metrics.json").exists()


@pytest.mark.parametrize("damage, reason", [
    (lambda r: (r / "samples.npz").unlink(), "no samples.npz"),
    (lambda r: (r / "samples.npz").write_bytes(b"PK\x03\x04 cut short"), "samples.npz damaged"),
    (lambda r: (r / "curve.csv").write_text(""), "curve.csv is empty"),
    (lambda r: (r / "config.json").unlink(), "no config.json"),
    (lambda r: (r / "metrics.json").write_text('{"nn_dist": 0.1'), "metrics.json damaged"),
    (lambda r: (r / "metrics.json").write_text('{"nn_dist": "x"}'), "metrics.json damaged"),
    (lambda r: (r / "run.json").write_text("{oops"), "run.json damaged"),
])
def test_a_point_is_done_only_with_its_whole_contract(damage, reason, tmp_path, capsys):
    run = tmp_path / "study" / "p1"
    fake_toy_run(run, {"D": 8}, {"nn_dist": 0.1})
    damage(run)
    got = results.done_reason(run, "toy", {"D": 8})
    assert got is not None and got.startswith(reason), got
    assert not results.is_current(run, {"D": 8}, "toy")
    results.done_reason(run, "toy", {"D": 8})                            # asked again: no second warning
    err = capsys.readouterr().err
    if reason.split()[0] in ("metrics.json", "run.json"):              # named in one warning line
        assert err.count("\n") == 1 and str(run / reason.split()[0]) in err and "redone" in err, err
    assert results.summarise("s", tmp_path / "study", [("p1", {"D": 8})], "toy").empty   # never crashes


def test_the_runner_redoes_a_point_missing_a_declared_file(tmp_path, monkeypatch):
    """run_study's plan: a toy folder without samples.npz is to do; the others are skipped (no kernel: the
    backend is replaced by a recorder)."""
    spec = load_study(FIG2)
    spec.override(["D=[2]", "pred=[x, v]"])
    points = runner.checked_points(spec)
    study = tmp_path / "toy_fig2"
    for rid, p in points:
        fake_toy_run(study / rid, {k: v for k, v in p.items()}, {"nn_dist": 0.1})
    (study / points[0][0] / "samples.npz").unlink()
    seen = {}

    def fake_local(notebook, study_dir, todo, **kw):
        seen["todo"] = [rid for rid, _ in todo]
        return {"ran": [], "skipped": [], "elsewhere": [], "failed": [], "submitted": []}
    monkeypatch.setattr(runner.backends, "run_local", fake_local)
    rep = runner.run_study(spec, tmp_path, progress=False, figures=False)
    assert seen["todo"] == [points[0][0]] and rep["skipped"] == [points[1][0]]


# ---- the summary is the study's --------------------------------------------------------------------------
def _committed_fig2(tmp_path) -> Path:
    study = tmp_path / "toy_fig2"
    study.mkdir()
    for name in ("summary.csv", "summary.parquet", "fig_toy_grid.png"):
        shutil.copy(ROOT / "results" / "toy_fig2" / name, study / name)
    return study


@pytest.mark.parametrize("sets, seed", [([], 0), (["seed=[1]"], 1)])
def test_a_rerun_updates_its_rows_in_place_and_keeps_the_rest(sets, seed, tmp_path, capsys):
    """A fresh clone holds the committed 3-seed summary and no run folders: the README's command re-runs seed 0
    (or --set seed=[1] re-runs seed 1); the summary keeps every other seed's rows as they were."""
    study = _committed_fig2(tmp_path)
    before = pd.read_csv(study / "summary.csv", dtype=str)
    lines_before = (study / "summary.csv").read_text().splitlines()
    spec = load_study(FIG2)
    spec.override(sets)
    points = runner.checked_points(spec)
    rid, params = points[0]
    assert params["seed"] == seed and rid in set(before["run_id"])
    fake_toy_run(study / rid, params, {"nn_dist": 123.0, "energy_distance": 7.0})
    runner.collect(spec, study, points, figures=True)
    after = pd.read_csv(study / "summary.csv", dtype=str)
    assert sorted(set(after["seed"])) == ["0", "1", "2"]
    others = before[before["run_id"] != rid]
    assert after[after["run_id"] != rid].reset_index(drop=True).equals(others.reset_index(drop=True))
    mine = after[after["run_id"] == rid]
    measured = mine[~mine["metric"].isin(results.RUN_TIMING)]                    # beside the runner's timing rows
    assert set(measured["metric"]) == {"nn_dist", "energy_distance"} and set(measured["value"]) == {"123.0", "7.0"}
    first = before.index[before["run_id"] == rid][0]
    assert list(after.index[after["run_id"] == rid]) == list(range(first, first + len(mine)))   # in place
    lines_after = (study / "summary.csv").read_text().splitlines()
    kept = [line for line in lines_before[1:] if f",{rid}," not in line]
    assert [line for line in lines_after[1:] if f",{rid}," not in line] == kept   # byte for byte
    assert len(pd.read_parquet(study / "summary.parquet")) == len(after)
    # figures: from the full summary; one that needs run folders not on disk is kept as it was
    assert (study / "fig_toy_grid.png").read_bytes() == (ROOT / "results/toy_fig2/fig_toy_grid.png").read_bytes()
    assert "figure toy_grid not redrawn" in capsys.readouterr().err
    assert (study / "fig_metric_vs_D.png").stat().st_size > 10_000


def test_run_file_is_the_one_accessor(tmp_path):
    assert run_file(tmp_path, "r1", "samples", must_exist=False) == tmp_path / "r1" / "samples.npz"
    with pytest.raises(MissingRunFile, match="r1/samples.npz is not on disk"):
        run_file(tmp_path, "r1", "samples")
    assert file_name("samples_a") == "model_a/samples.npz" and file_name("dims") == "dims.csv"
    with pytest.raises(ConfigError, match="unknown run file 'sample'; allowed: "):
        run_file(tmp_path, "r1", "sample")


def test_migrate_summary_turns_derived_metric_rows_into_columns():
    old = pd.DataFrame({"study": "s", "run_id": ["a", "a", "b", "b"], "patch_size": [2, 2, 8, 8],
                        "metric": ["fd", "token_dim", "fd", "token_dim"], "value": [1.5, 12.0, 2.5, 192.0]})
    new = results.migrate_summary(old, ("token_dim", "k"))
    assert list(new.columns) == ["study", "run_id", "patch_size", "token_dim", "metric", "value"]
    assert new["token_dim"].tolist() == [12, 192] and new["value"].tolist() == [1.5, 2.5]


def test_figure_names_read_from_source_are_the_registry():
    from manifold_lab.plots import figure_registry
    from manifold_lab.studies.spec import declared_figures

    assert declared_figures() == set(figure_registry())
