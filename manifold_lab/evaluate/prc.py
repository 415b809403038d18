"""Improved precision and recall (Kynkäänniemi et al. 2019; the paper's Table 13) beside FID and IS.

Precision: the share of generated samples inside the real manifold, the union of balls around each real
feature with radius its distance to its k-th nearest real neighbour. Recall: the share of real samples inside
the generated manifold, built the same way from the generated features. k = 3, as in the paper of the metric
and ADM's evaluator (whose Inception pool features the JiT paper's numbers come from). The computation is
torch-fidelity's (the pinned 0.4.0 provides it: ``prc_features_to_metric``), called on our features, so one
feature pass serves FID, IS and precision/recall.

Unlike the FID, it needs the real FEATURES, not only their mean and covariance: ``prepare-ref --prc-out
FILE`` stores the FID-layer features of the reference images (ADM uses 10K; up to ``--max-images``) in an
npz (``features``: (N, D) float32), and ``fid --prc-ref FILE`` reports precision and recall against it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from manifold_lab.checks import ConfigError
from manifold_lab.io import atomic_write

NEIGHBOURHOOD = 3   # k of the k-NN radii (Kynkäänniemi et al.; ADM's evaluator)


def precision_recall(generated: torch.Tensor, real: torch.Tensor, k: int = NEIGHBOURHOOD,
                     batch_size: int = 10000) -> dict[str, float]:
    """{precision, recall} of generated (N, D) against real (M, D) features, both in [0, 1].

    Needs more than k points in each set (the k-th neighbour radius). Identical sets give 1 and 1; sets
    farther apart than every k-NN radius give 0 and 0.
    """
    from torch_fidelity.metric_prc import prc_features_to_metric

    generated, real = torch.as_tensor(generated).float(), torch.as_tensor(real).float()
    if generated.ndim != 2 or real.ndim != 2 or generated.shape[1] != real.shape[1]:
        raise ConfigError(f"precision/recall needs (N, D) and (M, D) features, got {tuple(generated.shape)} and "
                          f"{tuple(real.shape)}")
    if min(len(generated), len(real)) <= k:
        raise ConfigError(f"precision/recall needs more than k = {k} samples in each set, got {len(generated)} "
                          f"generated and {len(real)} real")
    m = prc_features_to_metric(generated, real, prc_neighborhood=k, prc_batch_size=batch_size,
                               save_cpu_ram=True, verbose=False)
    return {"precision": float(m["precision"]), "recall": float(m["recall"])}


def save_ref_features(features: torch.Tensor, out_path, *, extractor: str, image_size: int) -> Path:
    """Write the reference features (N, D) float32 for precision/recall to an npz (atomically)."""
    arr = np.asarray(torch.as_tensor(features).float().cpu())

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, features=arr, extractor=extractor, image_size=image_size)
    return atomic_write(out_path, w)


def load_ref_features(path) -> torch.Tensor:
    """The (N, D) float32 features of an npz written by :func:`save_ref_features`; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"precision/recall reference {path} not found; build it with "
                                "`python -m manifold_lab prepare-ref ... --prc-out FILE`")
    with np.load(path) as z:
        if "features" not in z:
            raise ConfigError(f"precision/recall reference {path} must hold an array 'features'; it has "
                              f"{', '.join(z.files)}")
        feats = z["features"]
    if feats.ndim != 2 or not np.isfinite(feats).all():
        raise ConfigError(f"precision/recall reference {path}: need finite (N, D) features, got {feats.shape}")
    return torch.from_numpy(feats.astype(np.float32))
