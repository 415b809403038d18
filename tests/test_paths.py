"""A relative out_dir lands under the project root, whether a notebook runs from notebooks/ or by a study."""
from pathlib import Path

import papermill
import pytest

from manifold_lab import paths
from manifold_lab.checks import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _fake_root(path: Path) -> Path:
    """A folder that looks like a project root (notebooks/ and studies/)."""
    for name in ("notebooks", "studies"):
        (path / name).mkdir(exist_ok=True)
    return path


def test_project_root_is_the_source_tree_unless_the_environment_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    assert paths.project_root() == ROOT
    assert paths.studies_dir() == ROOT / "studies" and paths.notebooks_dir() == ROOT / "notebooks"
    assert paths.configs_dir() == ROOT / "configs"
    with pytest.raises(ConfigError, match="holds no notebooks"):    # a root must look like one
        monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
        paths.project_root()
    _fake_root(tmp_path)
    assert paths.project_root() == tmp_path.resolve()
    assert paths.resolve_out_dir("results/scratch/a") == tmp_path.resolve() / "results/scratch/a"
    assert paths.resolve_out_dir(tmp_path / "abs") == tmp_path / "abs"


def test_notebook_run_from_the_notebooks_folder_writes_under_the_project_results(monkeypatch, tmp_path):
    """As a JupyterLab kernel does: the working directory is notebooks/, out_dir is the default relative one."""
    monkeypatch.setenv(paths.ROOT_ENV, str(_fake_root(tmp_path)))
    out_nb = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "toy_manifold.ipynb"), str(out_nb), kernel_name="python3",
                               parameters={"D": 4, "steps": 3, "n_samples": 64, "n_reference": 10000,
                                           "sample_steps": 2, "threads": 1},
                               cwd=str(ROOT / "notebooks"), progress_bar=False)
    run = tmp_path / "results" / "scratch" / "toy"
    assert (run / "metrics.json").is_file() and (run / "fig_samples.png").is_file()
    assert not (ROOT / "notebooks" / "results").exists()
    outputs = [o for c in papermill.iorw.load_notebook_node(str(out_nb)).cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the sample figure is not displayed inline"
    assert not [o for o in outputs if o.get("output_type") == "error"]


if __name__ == "__main__":
    pytest.main([__file__])
