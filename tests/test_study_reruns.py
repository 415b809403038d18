"""No silent loss on reruns: a replaced run folder is kept aside (dated sibling), and a runner asked for
other parameter values refuses a point another runner holds alive instead of overwriting it."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
from test_study_backends import ROOT, executions, make_study

from manifold_lab import io
from manifold_lab.cli import main
from manifold_lab.studies import claims, execute, results


def _run(folder, y):
    io.write_json(folder / "metrics.json", {"y": y})
    return folder


def test_finalize_keeps_the_replaced_run_aside(tmp_path, capsys):
    old = _run(results.run_dir(tmp_path, "x01"), 1)
    aside = results.finalize(_run(results.partial_dir(tmp_path, "x01"), 2), old)
    assert io.read_json(old / "metrics.json") == {"y": 2}                      # the new run is current
    assert aside.name.startswith("x01.stale-") and io.read_json(aside / "metrics.json") == {"y": 1}
    second = results.finalize(_run(results.partial_dir(tmp_path, "x01"), 3), old)   # same second: no clash
    assert results.kept_aside(tmp_path) == sorted([aside, second]) and aside != second
    assert results.finalize(_run(results.partial_dir(tmp_path, "x02"), 4), tmp_path / "x02") is None


def test_a_live_claim_with_other_values_is_refused_not_overwritten(tmp_path):
    other = claims.this_owner()                              # another runner of this process: alive
    assert claims.try_claim(tmp_path, "x01", other, {"x": 1, "lr": 0.01})
    before = claims.claim_path(tmp_path, "x01").read_text()
    nb = tmp_path / "never.ipynb"                                # never executed
    assert execute.run_point(nb, tmp_path, "x01", {"x": 1, "lr": 0.003}) == execute.REFUSED
    assert execute.run_point(nb, tmp_path, "x01", {"x": 1, "lr": 0.01}) == execute.HELD
    assert claims.claim_path(tmp_path, "x01").read_text() == before
    line = execute.refusal(tmp_path, "x01", {"x": 1, "lr": 0.003})
    assert line.startswith("refused x01: another runner") and "lr: 0.01 there, 0.003 here" in line
    assert "\n" not in line


def test_status_lists_the_runs_kept_aside(tmp_path, capsys):
    spec, study = make_study(tmp_path, [1]), tmp_path / "results" / "square"
    results.finalize(_run(results.partial_dir(study, "x01"), 1), _run(study / "x01", 0))
    capsys.readouterr()
    assert main(["study", str(spec), "--results-dir", str(tmp_path / "results"), "--status"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("kept aside (1: runs replaced") and "x01.stale-" in last


@pytest.mark.slow              # two study subprocesses, eight kernel starts
def test_two_runners_with_other_values_overwrite_nothing(tmp_path):
    spec = make_study(tmp_path, range(4), sleep_s=3.0)
    args = [sys.executable, "-m", "manifold_lab", "study", str(spec), "--results-dir", str(tmp_path / "results"),
            "--no-progress", "--workers", "2"]
    a = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    b = subprocess.Popen(args + ["--set", "sleep_s=3.5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    outs = [p.communicate(timeout=600) for p in (a, b)]
    err = outs[0][1] + outs[1][1]
    assert "refused x0" in err and "other parameter values (sleep_s: " in err, outs
    assert 1 in (a.returncode, b.returncode)                    # a refusing runner does not exit 0
    study = tmp_path / "results" / "square"
    kept = [p for p in study.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(kept) == len(executions(tmp_path))              # every run that ran is still there
    assert not list(study.glob(".*.claim"))


def test_an_unfinished_leftover_is_replaced_not_kept(tmp_path):
    final = results.run_dir(tmp_path, "x01")
    final.mkdir()
    (final / "half").write_text("no metrics")
    assert results.finalize(_run(results.partial_dir(tmp_path, "x01"), 2), final) is None
    assert results.kept_aside(tmp_path) == [] and not (final / "half").exists()
