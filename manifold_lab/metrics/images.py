"""The CPU-scale image metric: two Fréchet distances, one in learned features and one in pixel space.

Both fit a Gaussian to each image set and compute the Fréchet (2-Wasserstein) distance between them,
as FID does (Heusel et al. 2017), ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})``:

- ``fd_feat``: in the 64-d pooled features of a small conv net trained once on the same training images
  (:mod:`manifold_lab.metrics.features`; a self-supervised proxy task, seeded and cached). It plays the role
  of Inception in FID, at our scale.
- ``fd_pix``: in pixel space, projected on the top ``PIX_COMPONENTS`` principal components of the reference
  images (the whole pixel vector where it is shorter; fitted once per reference set and cached,
  :func:`pixel_pca`). It needs no network at all.

Neither is comparable to a published FID. Both are biased upward by a finite sample size, so every run
also reports the **noise floor**: the same distance between ``n`` real training images and the reference
set (``*_floor``); a sample set is as good as real data only when its distance sits at that floor.
Any non-finite sample makes both distances +inf instead of crashing.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from scipy import linalg

from manifold_lab.data.imagefolder import to_model_range
from manifold_lab.data.real_images import ImageSet
from manifold_lab.io import cache_dir, cached_npz

PIX_COMPONENTS = 64


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and covariance (d, d) of features (n, d), in float64."""
    feats = np.asarray(feats, np.float64)
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d); >= 0."""
    mu_a, s_a = gaussian_stats(a)
    mu_b, s_b = gaussian_stats(b)
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(covmean).all():   # near-singular product: regularise, as pytorch-fid does
        off = np.eye(len(s_a)) * 1e-6
        covmean = linalg.sqrtm((s_a + off) @ (s_b + off))
    covmean = np.real(covmean)
    return float(max(0.0, ((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean)))


class PixelPCA:
    """Projection of flattened images on the top-k principal components of a reference set.

    mean: (D,) float64, components: (D, k) float64, D = C*H*W. ``__call__`` maps (n, C, H, W) to (n, k).
    Made by :meth:`fit`, or by :func:`pixel_pca`, which keeps each fit on disk.
    """

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        self.mean, self.components = mean, components

    @classmethod
    def fit(cls, ref: torch.Tensor, k: int = PIX_COMPONENTS) -> PixelPCA:
        """ref: (m, C, H, W) float images; k = min(k, C*H*W) components, by a thin SVD of the centred
        (m, C*H*W) matrix in float64."""
        x = ref.reshape(len(ref), -1).double()
        mean = x.mean(0)
        _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
        return cls(mean, vt[:min(k, x.shape[1])].T)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        flat = images.reshape(len(images), -1).to(self.mean.device).double()
        return ((flat - self.mean) @ self.components).cpu().numpy()


PCA_VERSION = 1   # bump when PixelPCA's fit changes, so old caches are not reused


def pixel_pca(ref: torch.Tensor, k: int = PIX_COMPONENTS) -> PixelPCA:
    """``PixelPCA.fit(ref, k)`` on the CPU, once per reference set: the fit is kept under
    ``$MANIFOLD_LAB_CACHE/pixel_pca`` (keyed by a hash of ref's values, its shape and k) and later calls read
    the same mean and components, to the bit. The fit, a thin SVD of the (m, C*H*W) reference matrix, takes
    about 9 s at 2000 images of 32 px on one CPU thread: every point of an image study paid it before."""
    x = ref.detach().reshape(len(ref), -1).cpu().contiguous()
    key = hashlib.sha1(x.numpy().tobytes() + repr((tuple(ref.shape), str(x.dtype), k)).encode()).hexdigest()[:16]
    path = cache_dir("pixel_pca") / f"pca-v{PCA_VERSION}-{key}-k{k}.npz"

    def fit() -> dict:
        pca = PixelPCA.fit(x, k)
        return {"mean": pca.mean.numpy(), "components": pca.components.numpy()}

    arrays = {name: torch.from_numpy(a).to(ref.device) for name, a in cached_npz(path, fit).items()}
    return PixelPCA(arrays["mean"], arrays["components"])


class ImageMetric:
    """Both Fréchet distances of generated images against an image set's reference split, plus floors.

    feature_net: (n, 3, H, W) in [-1, 1] -> (n, F) features (see metrics.features.load_feature_net), on
    ``device``. n_floor: how many training images make the real-vs-real floor (use the number of generated
    samples). Features and projections are computed on ``device``; the distances in float64 on the CPU.
    """

    def __init__(self, images: ImageSet, feature_net, n_floor: int, device=None):
        self.feature_net, self.device = feature_net, device
        ref = to_model_range(torch.from_numpy(images.ref).to(device))
        self.pca = pixel_pca(ref)
        self.ref_feat = self._features(ref)
        self.ref_pix = self.pca(ref)
        floor_set = to_model_range(torch.from_numpy(images.train[:n_floor]).to(device))
        self.floor = {"fd_feat_floor": frechet_distance(self._features(floor_set), self.ref_feat),
                      "fd_pix_floor": frechet_distance(self.pca(floor_set), self.ref_pix)}

    @torch.no_grad()
    def _features(self, x: torch.Tensor, chunk: int = 500) -> np.ndarray:
        x = x.to(self.device)
        return torch.cat([self.feature_net(x[i:i + chunk]) for i in range(0, len(x), chunk)]).double().cpu().numpy()

    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        """samples: (n, 3, H, W) generated, in model range (clipped to [-1, 1] as a saved image would be)."""
        if not torch.isfinite(samples).all():
            return {"fd_feat": math.inf, "fd_pix": math.inf} | self.floor
        x = samples.float().clamp(-1, 1)
        return {"fd_feat": frechet_distance(self._features(x), self.ref_feat),
                "fd_pix": frechet_distance(self.pca(x), self.ref_pix)} | self.floor
