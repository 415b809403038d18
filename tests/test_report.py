"""The results gallery: every study with results appears, every link resolves, the README links it."""
import re
import shutil
from pathlib import Path

from manifold_lab import explore, report
from manifold_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)#\s]+)\)")


def _check_links(text: str, base: Path):
    links = LINK.findall(text)
    assert links
    missing = [t for t in links if not t.startswith("http") and not (base / t).is_file()]
    assert not missing, missing
    return links


def test_committed_gallery_covers_every_study_and_its_links_resolve():
    text = (RESULTS / "README.md").read_text()
    for study in explore.list_studies(RESULTS):
        assert f"\n## {study}\n" in text, study
        for fig in explore.figures(study, RESULTS):
            assert f"]({study}/{fig.name})" in text, fig
    images = [t for t in _check_links(text, RESULTS) if t.endswith(".png")]
    assert len(images) == len(list(RESULTS.glob("*/fig_*.png")))
    assert "results/README.md" in (ROOT / "README.md").read_text()


def test_a_fresh_gallery_has_status_tables_paper_and_notes(tmp_path):
    for study in ("toy_fig2", "image_noise_shift"):
        shutil.copytree(RESULTS / study, tmp_path / study)
    (tmp_path / "toy_fig2" / "NOTES.md").write_text("Only x-prediction survives D = 512.")
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    _check_links(text, tmp_path)
    assert text.index("## toy_fig2") < text.index("## image_noise_shift")
    assert "Done: **12 of 12** grid points, plus 24 runs beyond it" in text and "seeds 0, 1, 2" in text
    assert "Only x-prediction survives D = 512." in text
    assert "| 512 | 56.2 (55.7–56.6) |" in text          # nn_dist of eps at D = 512 over 3 seeds
    assert "Beside the paper (Table 3" in text and "| -0.8 | x | 0.396 | 1 | 8.62 |" in text
    assert "processor not recorded" in text and "h summed over the runs" in text


def test_one_unreadable_study_does_not_cost_the_others(tmp_path):
    shutil.copytree(RESULTS / "toy_fig2", tmp_path / "toy_fig2")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.csv").write_text("study,run_id\nbroken,a\n")
    text = report.gallery(tmp_path)
    assert "## broken\n\ncould not summarise: KeyError" in text and "## toy_fig2" in text


def test_the_study_runner_rewrites_the_gallery_after_collecting(tmp_path, monkeypatch):
    from manifold_lab.studies import results, runner
    from manifold_lab.studies.spec import load_study

    committed = explore.read_summary("toy_fig2", RESULTS)
    monkeypatch.setattr(results, "summarise", lambda *a, **k: committed)
    spec = load_study(ROOT / "studies" / "toy_fig2.yaml")
    runner.collect(spec, tmp_path / "toy_fig2", [], figures=False)
    text = (tmp_path / "README.md").read_text()
    assert "## toy_fig2" in text and "Done: **12 of 12** grid points" in text
