"""Intrinsic dimension of images and JiT patches: the patch cut, the `id --images` command on rendered
families of known dimension, and the image_intrinsic_dim study shrunken through the runner."""
import ast
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.data.rendered import blob_parameters, render_blobs, write_image_folder
from manifold_lab.image_id import ImageIdConfig, patch_points
from manifold_lab.nets.jit import JiT

ROOT = Path(__file__).resolve().parents[1]


def test_patches_are_the_jit_tokens():
    """patch_points cuts the grid the JiT tokenises with: unpatchify of the patches gives the image back."""
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (3, 3, 16, 16), generator=g, dtype=torch.uint8).numpy()
    tokens = patch_points(u8, 4)                                    # (3 * 16, 48)
    assert tokens.shape == (48, 48)
    net = JiT(img_size=16, patch_size=4, hidden_size=32, depth=1, num_heads=2, num_classes=None,
              bottleneck_dim=None, in_context_len=0)
    back = net.unpatchify(tokens.reshape(3, 16, 48))
    torch.testing.assert_close(back, torch.from_numpy(u8).float() / 127.5 - 1)
    whole = patch_points(u8, 0)
    assert whole.shape == (3, 768) and whole.min() >= -1 and whole.max() <= 1


def test_rendered_blobs_vary_exactly_k_parameters():
    for k in (2, 4, 8):
        p = blob_parameters(50, k, seed=1)
        free = {name for name, v in p.items() if np.ptp(v) > 0}
        distinct = {tuple(v) for name, v in p.items() if name in free}  # sx = sy or r = g = b count once
        assert len(distinct) == k, (k, free)
    img = render_blobs(5, 8, 32, seed=0)
    assert img.shape == (5, 3, 32, 32) and img.dtype == np.uint8 and len({im.tobytes() for im in img}) == 5
    with pytest.raises(ConfigError, match="k must be one of 2, 4, 8"):
        blob_parameters(5, 3)


def _id_images(folder, k, n, est="twonn", out=None):
    args = ["id", "--images", str(folder), "--size", "32", "--n", str(n), "--estimator", est, "--halves", "4"]
    return main(args + (["--out", str(out)] if out else []))


def test_id_images_recovers_two_parameters(tmp_path, capsys):
    folder = write_image_folder(render_blobs(600, 2, 32, seed=2), tmp_path / "blobs")
    out = tmp_path / "id.json"
    assert _id_images(folder, 2, 600, out=out) == 0
    line = capsys.readouterr().out.strip()
    rec = json.loads(out.read_text())
    assert line.count("\n") == 0 and "twonn dimension of whole images (3072-d)" in line and "n=600" in line
    assert rec["estimate"] == pytest.approx(2, rel=0.25) and rec["n"] == 600 and rec["n_images"] == 600
    assert rec["half_min"] <= rec["half_mean"] <= rec["half_max"] and rec["half_std"] > 0
    assert main(["id", "--images", str(folder), "--size", "32", "--patch-size", "8", "--n", "2000",
                 "--estimator", "mle", "--halves", "0", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["token_dim"] == 192 and rec["n"] == 2000 and rec["mle_k"] == 20 and "half_min" not in rec
    capsys.readouterr()
    assert main(["id", "--images", str(folder), "--dist", "sphere"]) == 2
    assert "--dist do not apply" in capsys.readouterr().err
    assert main(["id", "--images", str(folder), "--estimator", "pca"]) == 2
    assert "unknown intrinsic-dimension estimator 'pca'" in capsys.readouterr().err
    assert main(["id", "--images", str(folder), "--size", "32", "--patch-size", "5"]) == 2
    assert "patch_size 5 does not divide the image size 32" in capsys.readouterr().err
    assert main(["id", "--images", str(tmp_path / "nowhere")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("k", [4, 8])
def test_id_images_recovers_four_and_eight_parameters(tmp_path, k):
    folder = write_image_folder(render_blobs(4000, k, 32, seed=k), tmp_path / "blobs")
    out = tmp_path / "id.json"
    assert _id_images(folder, k, 4000, out=out) == 0
    assert json.loads(out.read_text())["estimate"] == pytest.approx(k, rel=0.25)


def test_notebook_parameters_are_the_config_fields():
    import papermill

    from manifold_lab.config import defaults

    params = papermill.inspect_notebook(str(ROOT / "notebooks" / "image_intrinsic_dim.ipynb"))
    expected = defaults(ImageIdConfig)
    assert set(params) == set(expected) | {"out_dir", "threads"}
    for field, default in expected.items():
        assert ast.literal_eval(params[field]["default"]) == default, field


def test_study_runs_shrunken_through_the_runner(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("MANIFOLD_LAB_CACHE", str(tmp_path / "cache"))   # papermill kernels inherit it
    args = ["study", "studies/image_intrinsic_dim.yaml", "--results-dir", str(tmp_path), "--workers", "2",
            "--no-progress", "--set", "patch_size=4", "--set", "n=400", "--set", "n_images=200", "--set", "halves=2"]
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / "image_intrinsic_dim" / "summary.csv")
    assert summary["run_id"].nunique() == 2 and set(summary["estimator"]) == {"twonn", "mle"}
    assert {"estimate", "half_min", "half_max"} <= set(summary["metric"])      # measured numbers only
    assert not {"token_dim", "n", "n_images", "mle_k", "n_points"} & set(summary["metric"])
    assert (summary["token_dim"] == 48).all() and (summary["n_points"] == 400).all()   # derived: columns
    assert (tmp_path / "image_intrinsic_dim" / "fig_image_id_vs_token_dim.png").stat().st_size > 5_000
