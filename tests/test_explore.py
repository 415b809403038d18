"""The results API on the committed results: studies, tidy tables, status, runs, figures, the paper's numbers."""
import shutil
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

from manifold_lab import explore

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def test_lists_every_committed_study_with_a_summary():
    have = {p.parent.name for p in RESULTS.glob("*/summary.csv")}
    assert set(explore.list_studies(RESULTS)) == have and "toy_fig2" in have
    with pytest.raises(FileNotFoundError, match="no summary for study 'nope'.*toy_fig2"):
        explore.load_summary("nope", RESULTS)


def test_summary_has_parameters_and_derived_settings_as_columns():
    df = explore.load_summary("image_pred_loss", RESULTS)
    for col in ("patch_size", "pred", "loss", "seed", "token_dim", "img_size", "params"):
        assert col in df.columns, col
    assert not df["metric"].isin(explore.DERIVED_SETTINGS).any()
    runs = df.drop_duplicates("run_id")
    assert (runs["token_dim"] == 3 * runs["patch_size"] ** 2).all()
    assert len(df) == len(explore.read_summary("image_pred_loss", RESULTS))   # committed: already columns


def test_derived_settings_written_as_metric_rows_become_columns():
    """Summaries written before the run contract held token_dim etc. as metric rows; tidy makes them columns."""
    cols = explore.load_summary("image_pred_loss", RESULTS)
    one = cols[cols.run_id == cols.run_id.iloc[0]]
    derived = ["token_dim", "img_size", "params"]
    old = pd.concat([one.drop(columns=derived),
                     *(one.iloc[:1].drop(columns=derived).assign(metric=m, value=float(one[m].iloc[0]))
                       for m in derived)], ignore_index=True)
    back = explore.tidy(old)
    assert not back["metric"].isin(explore.DERIVED_SETTINGS).any() and len(back) == len(one)
    assert (back["token_dim"] == one["token_dim"].iloc[0]).all()


def test_a_summary_that_already_has_derived_columns_reads_the_same():
    raw = explore.read_summary("image_width", RESULTS)
    once = explore.tidy(raw)
    assert explore.tidy(once).equals(once)


def test_wide_and_pivoted_tables_match_the_tidy_values():
    df = explore.load_summary("toy_fig2", RESULTS)
    w = explore.wide(df)
    assert len(w) == df["run_id"].nunique() == 36 and {"nn_dist", "off_manifold", "D", "pred"} <= set(w.columns)
    t = explore.table(df, "nn_dist", rows="D", cols="pred")
    sel = df[(df.metric == "nn_dist") & (df.D == 512) & (df.pred == "x")]["value"]
    assert t.loc[512, "x"] == pytest.approx(sel.mean()) and len(sel) == 3
    assert explore.table(df, "nn_dist", rows="D", cols="pred", agg="count").loc[2, "eps"] == 3
    assert explore.table(df, "nn_dist", rows="D", cols="pred", seed=0).loc[512, "x"] == pytest.approx(
        sel[df.loc[sel.index, "seed"] == 0].iloc[0])
    with pytest.raises(KeyError, match="no metric 'fid'"):
        explore.table(df, "fid", rows="D", cols="pred")


def test_status_counts_grid_points_seeds_and_runs_beyond_the_grid():
    st = explore.status("toy_fig2", RESULTS)
    assert (st["done"], st["total"], st["beyond_grid"], st["seeds"]) == (12, 12, 24, [0, 1, 2])
    assert explore.status("toy_phase", RESULTS)["done"] == explore.status("toy_phase", RESULTS)["total"] == 105
    seeds = explore.status("toy_phase_seeds", RESULTS)           # every width run
    assert seeds["total"] == seeds["done"] == 108 and not seeds["pending"]
    assert "108 of 108 grid points done" in explore.status_line(seeds)


def test_runs_list_folders_and_a_run_made_here_loads_its_samples_and_curve(tmp_path):
    from manifold_lab.toy import ToyConfig, run_toy

    study = tmp_path / "toy_fig2"
    study.mkdir()
    shutil.copy(RESULTS / "toy_fig2" / "summary.csv", study / "summary.csv")
    rid = "D0002-spiral-d2-mlp-w256-xpred-vloss-s0"
    with pytest.raises(FileNotFoundError, match="not on this machine"):
        explore.load_samples("toy_fig2", rid, tmp_path)
    run_toy(ToyConfig(D=2, steps=3, n_samples=64, sample_steps=2), study / rid, progress=False)
    r = explore.runs("toy_fig2", tmp_path).set_index("run_id")
    assert r.loc[rid, "on_disk"] and r.loc[rid, "folder"] == str(study / rid) and r.loc[rid, "status"] == "done"
    assert explore.status("toy_fig2", tmp_path)["on_disk"] == 1
    samples = explore.load_samples("toy_fig2", rid, tmp_path)
    assert samples["samples"].shape == (64, 2) and samples["P"].shape == (2, 2)
    assert len(explore.load_curve("toy_fig2", rid, tmp_path)) == 3


def test_draws_a_registered_figure_from_a_committed_summary(tmp_path):
    # the committed summary and figures alone, as a fresh clone has them (the README's main command, run in
    # the same clone before the tests, adds run folders beside them)
    committed = tmp_path / "toy_fig2"
    committed.mkdir()
    for f in ["summary.csv", "fig_toy_grid.png", "fig_metric_vs_D.png"]:
        shutil.copy(RESULTS / "toy_fig2" / f, committed / f)
    fig = explore.draw("toy_fig2", "metric_vs_D", tmp_path)
    assert len(fig.axes) >= 3 and fig.axes[0].lines
    with pytest.raises(KeyError, match="registered"):
        explore.draw("toy_fig2", "nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="per-run files"):
        explore.draw("toy_fig2", "toy_grid", tmp_path)
    assert [p.name for p in explore.figures("toy_fig2", tmp_path)] == ["fig_toy_grid.png", "fig_metric_vs_D.png"]


def test_the_papers_numbers_stand_beside_ours_where_it_has_them():
    from manifold_lab import paper

    b = explore.beside_paper("image_pred_loss", "fd_feat", RESULTS)
    row = b[(b.patch_size == 8) & (b.loss == "v") & (b.pred == "x")].iloc[0]
    assert row["paper_fid"] == paper.TABLE2[(256, "v", "x")] and row["seeds"] == 3
    assert b["paper_fid"].notna().all() and len(b) == 18
    ns = explore.beside_paper("image_noise_shift", "fd_feat", RESULTS)
    assert ns.set_index(["p_mean", "pred"]).loc[(-0.8, "x"), "paper_fid"] == paper.TABLE3[(-0.8, "x")]
    bn = explore.beside_paper("image_bottleneck", "fd_feat", RESULTS).set_index("bottleneck_dim")
    assert bn.loc[0, "paper_fid"] == paper.FIG4[None] and pd.isna(bn.loc[4, "paper_fid"])
    assert explore.paper_numbers("toy_fig2").empty
    with pytest.raises(KeyError, match="no numbers for 'toy_fig2'"):
        explore.beside_paper("toy_fig2", "nn_dist", RESULTS)


def test_the_widget_explorer_follows_the_chosen_study_and_filters():
    pytest.importorskip("ipywidgets")
    from manifold_lab.explore_widgets import explorer

    box = explorer("toy_fig2", RESULTS)
    study, metric = box.children[0].children
    rows, cols = box.children[1].children
    assert (metric.value, rows.value, cols.value) == ("nn_dist", "D", "pred")
    study.value = "image_pred_loss"
    assert (metric.value, rows.value, cols.value) == ("fd_feat", "patch_size", "pred")
    filters = {f.description: f for f in box.children[2].children}
    assert "loss" in filters and set(filters["loss"].options) == {"(all)", "v", "x", "eps"}
    filters["loss"].value = "eps"      # redraws without error
    assert box.children[3] is not None
