"""`study --plan`: an estimate for every committed study, from recorded times, creating nothing."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_study_backends import make_study

from manifold_lab import io
from manifold_lab.cli import main
from manifold_lab.studies import plan
from manifold_lab.studies.spec import load_study

ROOT = Path(__file__).resolve().parents[1]


def _tree(path: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in path.rglob("*")}


@pytest.mark.parametrize("yaml", sorted(p.name for p in (ROOT / "studies").glob("*.yaml")))
def test_plan_estimates_every_committed_study_and_writes_nothing(yaml, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    before = _tree(ROOT / "results")
    assert main(["study", f"studies/{yaml}", "--plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    spec = load_study(ROOT / "studies" / yaml)
    assert out[0].startswith(f"plan for study {spec.study}: {len(spec.points())} points") and "device" in out[0]
    total = next(line for line in out if line.startswith("total: ~"))
    assert "without one" not in total, total                   # every point has an estimate
    assert len([line for line in out if line.startswith("  ")]) == len(spec.points())
    assert _tree(ROOT / "results") == before


def test_estimate_uses_the_same_point_then_the_nearest_scaled(tmp_path, monkeypatch):
    spec_path = make_study(tmp_path, [1, 2, 4])
    results_dir = tmp_path / "results"
    rows = ["study,run_id,x,sleep_s,log,metric,value",
            f"square,x01,1,0.0,{tmp_path / 'runs.log'},wall_s,10.0",
            f"square,x01,1,0.0,{tmp_path / 'runs.log'},wall_s,10.0"]
    (results_dir / "square").mkdir(parents=True)
    (results_dir / "square" / "summary.csv").write_text("\n".join(rows) + "\n")
    io.write_json(results_dir / "square" / "x04" / "run.json", {"wall_s": 30.0, "sgemm_gflops": 50.0})
    monkeypatch.setattr(plan, "sgemm_gflops", lambda: 100.0)    # this machine: twice the recorded rate
    text, wall = plan.plan(load_study(spec_path), results_dir)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "~10 s" in lines["x01"] and "same point" in lines["x01"]
    assert "~10 s" in lines["x02"] and "nearest recorded: square x01" in lines["x02"]
    assert "~15 s" in lines["x04"] and "run.json x04" in lines["x04"]       # 30 s at half this rate
    assert wall == pytest.approx((10 + 10 + 15) / 2)                           # 2 workers


def test_a_summary_carries_the_rate_its_times_were_taken_at(tmp_path, monkeypatch):
    """The runner's run.json wall time and matmul rate reach the summary (sgemm_gflops, wall_s where the
    notebook recorded none), and --plan scales a summary record by it: each record by its own rate."""
    from manifold_lab.studies import results

    run = tmp_path / "run"
    io.write_json(run / "run.json", {"wall_s": 40.0, "sgemm_gflops": 50.0, "threads": 1})
    assert results.run_timing(run, {"train_s": 30.0}) == {"wall_s": 40.0, "sgemm_gflops": 50.0}
    assert results.run_timing(run, {"wall_s": 33.0}) == {"sgemm_gflops": 50.0}       # the notebook's own wall_s
    assert results.run_timing(tmp_path / "none", {}) == {}
    bad = tmp_path / "bad"                  # no usable number: a bool, a text, NaN, infinite, zero: none taken
    io.write_json(bad / "run.json", {"wall_s": True, "sgemm_gflops": "fast"})
    assert results.run_timing(bad, {}) == {}
    assert [results.recorded_number(v) for v in (float("nan"), float("inf"), 0, -1.0, None, 7)] == [None] * 5 + [7.0]
    # one run's cost, shared by --plan's records and the gallery's run time: wall_s first, else its timed parts
    assert results.run_seconds({"wall_s": 9.0, "train_s": 5.0}) == (9.0, True)
    assert results.run_seconds({"wall_s": float("nan"), "train_s": 5.0, "sample_s": 2.0}) == (7.0, False)
    assert results.run_seconds({"sample_s": 2.0}) == (2.0, False)
    assert results.run_seconds({"nn_dist": 0.1}) == (None, False)
    io.write_json(bad / "run.json", {"wall_s": 12.0, "sgemm_gflops": "fast"})   # a run folder's time, its rate unusable
    assert plan._own_run(tmp_path, "bad") == {"_s": 12.0, "gflops": None, "source": "run.json bad", "params": {}}
    spec_path = make_study(tmp_path, [1, 2])
    results_dir = tmp_path / "results"
    rows = ["study,run_id,x,sleep_s,log,metric,value"]
    for rid, wall, rate in (("x01", 40.0, 50.0), ("x01-old", 10.0, 200.0)):   # x = 1 twice, at two rates
        rows += [f"square,{rid},1,0.0,{tmp_path / 'runs.log'},wall_s,{wall}",
                 f"square,{rid},1,0.0,{tmp_path / 'runs.log'},sgemm_gflops,{rate}"]
    (results_dir / "square").mkdir(parents=True)
    (results_dir / "square" / "summary.csv").write_text("\n".join(rows) + "\n")
    monkeypatch.setattr(plan, "sgemm_gflops", lambda: 100.0)
    text, _ = plan.plan(load_study(spec_path), results_dir)
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "~20 s" in lines["x01"] and "~20 s" in lines["x02"], text       # (40 x 0.5 + 10 x 2) / 2
    rows.append(f"square,x01-older,1,0.0,{tmp_path / 'runs.log'},wall_s,500.0")       # no rate: not averaged in
    (results_dir / "square" / "summary.csv").write_text("\n".join(rows) + "\n")
    text, _ = plan.plan(load_study(spec_path), results_dir)
    assert "~20 s" in text.splitlines()[1] and "2 recorded run(s)" in text.splitlines()[1], text


def test_plan_into_a_scratch_results_folder_uses_the_committed_times(tmp_path, monkeypatch, capsys):
    """--results-dir elsewhere (nothing recorded there): the project's committed summaries still give the
    estimate, also with settings they were not recorded with (the nearest recorded point)."""
    monkeypatch.chdir(ROOT)
    scratch = tmp_path / "scratch"
    assert main(["study", "studies/toy_fig2.yaml", "--plan", "--results-dir", str(scratch),
                 "--set", "lr=0.003"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total: ~"))
    assert "without one" not in total and "nearest recorded: toy_fig2" in out, out
    assert not scratch.exists()


def test_plan_for_a_gpu_says_the_recorded_times_are_cpu_times(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    assert main(["study", "studies/toy_fig2.yaml", "--plan", "--results-dir", str(tmp_path / "s"),
                 "--set", "device=cuda", "--workers", "8"]) == 0
    out = capsys.readouterr().out
    assert "device cuda" in out.splitlines()[0] and "recorded on CPUs" in out and "gpu_suite.sh 6" in out
    assert main(["study", "studies/toy_fig2.yaml", "--plan", "--results-dir", str(tmp_path / "s")]) == 0
    assert "recorded on CPUs" not in capsys.readouterr().out


def test_plan_in_fast_mode_divides_fp32_records_by_the_measured_gain(tmp_path, monkeypatch):
    """With fp32 records only (the committed bf16 ones, e.g. toy_phase_fast's, left out), the fast plan is the
    fp32 one divided by the measured gain."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(plan, "sgemm_gflops", lambda: 100.0)
    records = plan._records
    monkeypatch.setattr(plan, "_records", lambda *a: [r for r in records(*a) if r["params"].get("precision") != "bf16"])
    spec = load_study(ROOT / "studies" / "toy_fig2.yaml")
    _, fp32 = plan.plan(spec, tmp_path / "s")
    fast = load_study(ROOT / "studies" / "toy_fig2.yaml")
    fast.override(["precision=bf16", "compile=true"])
    text, wall = plan.plan(fast, tmp_path / "s")
    assert wall == pytest.approx(fp32 / plan.FAST_GAIN["toy"], rel=1e-6) and "for bf16" in text


def test_fast_gain_applies_both_ways_and_never_on_a_gpu():
    fp32, bf16 = {}, {"precision": "bf16"}
    assert plan._fast_gain(bf16, fp32, "toy_manifold.ipynb") == plan.FAST_GAIN["toy"]
    assert plan._fast_gain(fp32, bf16, "toy_memorisation.ipynb") == pytest.approx(1 / plan.FAST_GAIN["toy"])
    assert plan._fast_gain(bf16, bf16, "image_study.ipynb") == 1.0
    assert plan._fast_gain({**bf16, "device": "cuda"}, fp32, "toy_manifold.ipynb") == 1.0
    assert plan._fast_gain(bf16, fp32, "imagenet_run.ipynb") == 1.0


def test_compile_alone_takes_its_own_measured_gain():
    """fp32 compiled (a CPU without bf16): COMPILE_GAIN against fp32 eager; bf16 against compiled the ratio."""
    fp32, comp, bf16 = {}, {"compile": True}, {"precision": "bf16", "compile": True}
    assert plan._fast_gain(comp, fp32, "toy_manifold.ipynb") == plan.COMPILE_GAIN["toy"]
    assert plan._fast_gain({"compile": "true"}, fp32, "image_study.ipynb") == plan.COMPILE_GAIN["image"]
    assert plan._fast_gain(fp32, comp, "image_study.ipynb") == pytest.approx(1 / plan.COMPILE_GAIN["image"])
    assert plan._fast_gain(bf16, comp, "toy_manifold.ipynb") == pytest.approx(
        plan.FAST_GAIN["toy"] / plan.COMPILE_GAIN["toy"])
    assert plan._fast_gain({"compile": False}, fp32, "toy_manifold.ipynb") == 1.0
    assert plan._fast_gain({**comp, "device": "cuda"}, fp32, "toy_manifold.ipynb") == 1.0
    secs, source = plan.estimate({"D": 8, "compile": True}, "x", Path("/nonexistent"),
                                 [{"params": {"D": 8}, "_s": 108.0, "gflops": None, "source": "s r"}],
                                 "toy_manifold.ipynb", here=100.0)
    assert secs == pytest.approx(100.0) and "for compile against fp32" in source


def test_among_equally_near_records_the_same_mode_then_a_rated_one_is_taken(tmp_path):
    """A bf16 point nearest to an fp32 and a bf16 record alike takes the bf16 one (no gain guessed), and
    between two of its mode the one with a recorded matmul rate."""
    recs = [{"params": {"D": 8, "precision": "fp32"}, "_s": 100.0, "gflops": None, "source": "old a"},
            {"params": {"D": 8, "precision": "bf16"}, "_s": 40.0, "gflops": None, "source": "fast b"},
            {"params": {"D": 8, "precision": "bf16"}, "_s": 30.0, "gflops": 50.0, "source": "fast c"}]
    point = {"D": 16, "precision": "bf16"}
    secs, source = plan.estimate(point, "x", tmp_path, recs, "toy_manifold.ipynb", here=100.0)
    assert source == "nearest recorded: fast c" and secs == pytest.approx(30.0 * 0.5)
    secs, source = plan.estimate({"D": 16, "precision": "fp32"}, "x", tmp_path, recs, "toy_manifold.ipynb", 100.0)
    assert source == "nearest recorded: old a" and secs == pytest.approx(100.0)


def test_a_recorded_same_point_of_the_points_mode_is_taken_before_one_of_the_other_mode(tmp_path):
    """A bf16 point recorded in fp32 by one study and in bf16 by another takes the bf16 study's records (its
    seeds averaged), not the first study's divided by a guessed gain; an fp32 point the other way round."""
    recs = [{"params": {"D": 8, "precision": "fp32"}, "_s": 300.0, "gflops": 100.0, "source": "toy_phase a"},
            {"params": {"D": 8, "precision": "bf16"}, "_s": 90.0, "gflops": 100.0, "source": "toy_phase_fast b"},
            {"params": {"D": 8, "precision": "bf16"}, "_s": 110.0, "gflops": 100.0, "source": "toy_phase_fast c"},
            {"params": {"D": 8, "precision": "bf16"}, "_s": 999.0, "gflops": 100.0, "source": "other d"}]
    secs, source = plan.estimate({"D": 8, "precision": "bf16"}, "x", tmp_path, recs, "toy_manifold.ipynb", 100.0)
    assert source == "same point, 2 recorded run(s) (toy_phase_fast)" and secs == pytest.approx(100.0)
    secs, source = plan.estimate({"D": 8, "precision": "fp32"}, "x", tmp_path, recs, "toy_manifold.ipynb", 100.0)
    assert source == "same point, 1 recorded run(s) (toy_phase)" and secs == pytest.approx(300.0)


def test_plan_notes_records_from_another_processor_kind(tmp_path, monkeypatch, capsys):
    """Rates far from this machine's (another processor kind) get a line saying which way the total errs;
    rates near it none."""
    assert plan._other_kind_note([190.0, 197.0, 200.0], 92.0).endswith("the total is likely too high")
    assert "2.14x above" in plan._other_kind_note([190.0, 197.0, 200.0], 92.0)
    assert plan._other_kind_note([90.0, 92.0, 95.0], 197.0).endswith("likely too low")
    assert plan._other_kind_note([150.0, 197.0, 219.0], 160.0) == "" and plan._other_kind_note([], 92.0) == ""
    monkeypatch.chdir(ROOT)
    rates = [r["gflops"] for r in plan._records(load_study(ROOT / "studies" / "toy_fig2.yaml"), ROOT / "results",
                                                    ROOT / "studies") if r.get("gflops") and r["source"].startswith("toy_fig2 ")]
    median = sorted(rates)[len(rates) // 2]
    for here, noted in ((median, False), (median / 3, True)):
        monkeypatch.setattr(plan, "sgemm_gflops", lambda h=here: h)
        assert main(["study", "studies/toy_fig2.yaml", "--plan", "--results-dir", str(tmp_path / "s")]) == 0
        assert ("note: the recorded runs' matmul rate is 3.00x above" in capsys.readouterr().out) == noted
