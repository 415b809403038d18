"""Precision and recall (Kynkäänniemi et al.; the paper's Table 13): known cases, and through `fid`."""
from __future__ import annotations

import json

import pytest
import torch
from imagenet_helpers import make_image_folder
from PIL import Image

from manifold_lab.checks import ConfigError
from manifold_lab.cli import main
from manifold_lab.data.imagefolder import load_image
from manifold_lab.evaluate.prc import load_ref_features, precision_recall


def _cloud(n, d=8, shift=0.0, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_identical_sets_give_one_and_one():
    a = _cloud(200)
    assert precision_recall(a, a.clone()) == {"precision": 1.0, "recall": 1.0}


def test_disjoint_supports_give_zero_and_zero():
    assert precision_recall(_cloud(200, shift=100.0), _cloud(200, seed=1)) == {"precision": 0.0, "recall": 0.0}


def test_mode_dropping_keeps_precision_and_loses_recall():
    real = torch.cat([_cloud(200), _cloud(200, shift=50.0, seed=1)])       # two well separated modes
    one_mode = _cloud(200, seed=2)                                          # the generator drops the second
    m = precision_recall(one_mode, real)
    assert m["precision"] > 0.8 and 0.4 < m["recall"] < 0.6                 # recall about 1/2
    hand = _hand_precision(one_mode, real, k=3)                             # the definition, computed directly
    assert m["precision"] == pytest.approx(hand)


def _hand_precision(gen, real, k):
    radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values          # k-th neighbour (self excluded)
    return (torch.cdist(gen, real) <= radii).any(dim=1).float().mean().item()


def test_bad_features_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"\(N, D\) and \(M, D\)"):
        precision_recall(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ConfigError, match="more than k = 3"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))
    with pytest.raises(FileNotFoundError, match="--prc-out"):
        load_ref_features(tmp_path / "none.npz")


def test_fid_reports_precision_and_recall_against_prepared_features(tmp_path, capsys):
    data = make_image_folder(tmp_path / "train", classes=2, per_class=6)
    pngs = tmp_path / "pngs"                                                # the reference itself, as PNGs
    pngs.mkdir()
    for i, p in enumerate(sorted(data.rglob("*.*"))):
        Image.fromarray(load_image(str(p), 16).permute(1, 2, 0).numpy()).save(pngs / f"{i:04d}.png")
    assert main(["prepare-ref", "--data-path", str(data), "--img-size", "16", "--out", str(tmp_path / "ref.npz"),
                 "--prc-out", str(tmp_path / "prc.npz"), "--feature-extractor", "tiny"]) == 0
    assert load_ref_features(tmp_path / "prc.npz").shape[0] == 12
    assert main(["fid", str(pngs), "--ref", str(tmp_path / "ref.npz"), "--prc-ref", str(tmp_path / "prc.npz"),
                 "--feature-extractor", "tiny", "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and "precision 1.0000  recall 1.0000" in capsys.readouterr().out
