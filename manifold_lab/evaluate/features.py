"""The feature extractors of FID and IS: torch-fidelity's Inception-v3 (the paper's) or a seeded tiny stand-in
for tests, the image sources (a folder of PNGs / an ADM-cropped image list, a samples npz), one extraction
pass, and the (mu, sigma) statistics of features as torch-fidelity computes them. Shared by ``fid``
(evaluate/fid.py) and ``prepare-ref`` (evaluate/ref_stats.py), with their common command-line flags.

Nothing is downloaded: the Inception weights are a local file given by ``--inception-weights`` or the
``MANIFOLD_LAB_INCEPTION_WEIGHTS`` environment variable.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

ENV_WEIGHTS = "MANIFOLD_LAB_INCEPTION_WEIGHTS"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
EXTRACTORS = {  # our name -> (torch-fidelity registry name, FID layer, IS layer)
    "inception": ("inception-v3-compat", "2048", "logits_unbiased"),
    "tiny": ("manifold-lab-tiny-stand-in", "pool", "logits"),
}


def resolve_inception_weights(path: str | None = None) -> str:
    """The local Inception weights file: ``path``, else $MANIFOLD_LAB_INCEPTION_WEIGHTS. One-line error if absent."""
    p = path or os.environ.get(ENV_WEIGHTS)
    if not p or not Path(p).is_file():
        where = f"{p!r} does not exist" if p else "no path given"
        raise FileNotFoundError(
            f"Inception weights not found ({where}): download {INCEPTION_URL} (the pt_inception-2015-12-05 "
            f"weights torch-fidelity uses) on a machine with internet, copy it here, and pass "
            f"--inception-weights PATH or set {ENV_WEIGHTS}=PATH")
    return str(p)


# ---- the stand-in feature extractor ----------------------------------------------------------------
def _tiny_extractor_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class TinyStandIn(FeatureExtractorBase):
        """A seeded random conv net on 32x32 inputs: 'pool' (16-d) for FID, 'logits' (10) for IS.

        Built inside a forked RNG with a fixed seed: the same weights every time, global RNG untouched.
        """

        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1234)
                self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(),
                                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Tanh(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
                self.head = nn.Linear(16, 10)
            self.requires_grad_(False).eval()

        @staticmethod
        def get_provided_features_list():
            return "pool", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"fid": "pool", "isc": "logits", "kid": "pool", "prc": "pool"}[metric]

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            x = nn.functional.interpolate(x.float() / 127.5 - 1, size=(32, 32), mode="bilinear",
                                          align_corners=False)
            pool = self.body(x)
            feats = {"pool": pool, "logits": self.head(pool) * 4.0}
            return tuple(feats[a] for a in self.features_list)

    return TinyStandIn


def _ensure_registered(kind: str) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    name = EXTRACTORS[kind][0]
    if kind == "tiny" and name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, _tiny_extractor_class())


def fidelity_kwargs(kind: str = "inception", weights: str | None = None, *, batch_size: int = 64,
                    cuda: bool | None = None, verbose: bool = False) -> dict:
    """torch-fidelity keyword arguments for our extractor choice (checks the weights file first)."""
    if kind not in EXTRACTORS:
        from manifold_lab.checks import ConfigError
        raise ConfigError(f"unknown feature extractor {kind!r}; allowed: {', '.join(EXTRACTORS)}")
    _ensure_registered(kind)
    name, fid_layer, isc_layer = EXTRACTORS[kind]
    kw = dict(feature_extractor=name, feature_layer_fid=fid_layer, feature_layer_isc=isc_layer,
              batch_size=batch_size, cuda=torch.cuda.is_available() if cuda is None else cuda,
              verbose=verbose, save_cpu_ram=True, cache=False, samples_find_deep=False, samples_find_ext="png")
    if kind == "inception":
        kw["feature_extractor_weights_path"] = resolve_inception_weights(weights)
    return kw


def extractor(kw: dict):
    from torch_fidelity.utils import create_feature_extractor

    layers = sorted({kw["feature_layer_fid"], kw["feature_layer_isc"]})
    return create_feature_extractor(kw["feature_extractor"], layers, **{**kw, "verbose": False})


# ---- reference statistics ----------------------------------------------------------------------------
class FileImages(torch.utils.data.Dataset):
    """Image files as uint8 (3, S, S): ADM-centre-cropped to ``img_size``, or as stored (``img_size`` None,
    e.g. sample PNGs). bad_images "error": an unreadable file is a one-line BadImageError naming it; "skip":
    it is named in a warning and its item is None (dropped by :func:`_extract`)."""

    def __init__(self, files: list[str], img_size: int | None = None, bad_images: str = "error"):
        from manifold_lab.checks import check_choice

        self.files, self.img_size = files, img_size
        self.bad_images = check_choice("bad_images", bad_images, ("error", "skip"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from manifold_lab.data.imagefolder import BadImageError, load_image

        path = self.files[i]
        try:
            if self.img_size:
                return load_image(path, self.img_size)
            return _read_as_stored(path)
        except BadImageError as e:
            if self.bad_images == "skip":
                print(f"warning: skipping unreadable image {path}", flush=True)
                return None
            raise BadImageError(f"{e} (pass --bad-images skip to skip unreadable images)") from None


def _read_as_stored(path: str) -> torch.Tensor:
    """One image file as uint8 (3, H, W), RGB; BadImageError naming the file if it cannot be decoded."""
    from PIL import Image

    from manifold_lab.data.imagefolder import BadImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001  (PIL raises many types for truncated or non-image files)
        raise BadImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _stack_kept(items):
    kept = [x for x in items if x is not None]
    return torch.stack(kept) if kept else None


def extract(data, fe, kw: dict, verbose: bool = False) -> dict:
    """{layer: (N, D) features} of the images of ``data`` (torch-fidelity's extraction loop; the items a
    skipping dataset returns as None are left out). No readable image is a one-line ConfigError."""
    from manifold_lab.checks import ConfigError

    loader = torch.utils.data.DataLoader(data, batch_size=max(1, min(kw["batch_size"], len(data))),
                                         collate_fn=_stack_kept, num_workers=0)
    out: dict = {}
    with torch.no_grad():
        for batch in loader:
            if batch is None:
                continue
            feats = fe.convert_features_tuple_to_dict(fe(batch.cuda() if kw["cuda"] else batch))
            for k, v in feats.items():
                out.setdefault(k, []).append(v.cpu())
    if not out:
        where = Path(data.files[0]).parent if getattr(data, "files", None) else "the input"
        raise ConfigError(f"none of the {len(data)} images under {where} could be read")
    return {k: torch.cat(v) for k, v in out.items()}


class NpzImages(torch.utils.data.Dataset):
    """The images of a samples npz (arr_0: (N, H, W, 3) uint8, the ADM / `sample --format npz` layout)."""

    def __init__(self, path):
        from manifold_lab.checks import ConfigError

        try:
            z = np.load(path)
        except Exception as e:  # noqa: BLE001  (np.load raises many kinds on damaged input)
            raise ConfigError(f"cannot read samples {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        with z:
            if "arr_0" not in z:
                raise ConfigError(f"{path} has no arr_0 (N, H, W, 3) uint8 array; it has "
                                  f"{', '.join(z.files) or 'none'}")
            self.arr = z["arr_0"]
        if self.arr.ndim != 4 or self.arr.shape[-1] != 3 or self.arr.dtype != np.uint8:
            raise ConfigError(f"{path}: arr_0 must be (N, H, W, 3) uint8, got {self.arr.shape} {self.arr.dtype}")

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, i):
        return torch.from_numpy(self.arr[i]).permute(2, 0, 1).contiguous()


def stats_from_features(features: torch.Tensor) -> dict:
    """{mu, sigma} of (N, D) float32 features as torch-fidelity computes them: mu float32 (D,) (the
    float32 mean), sigma float64 (D, D) (np.cov) -- the dtypes its fid_statistics_to_metric asserts."""
    from torch_fidelity.metric_fid import fid_features_to_statistics
    s = fid_features_to_statistics(features.float())
    return {"mu": np.asarray(s["mu"], dtype=np.float32), "sigma": np.asarray(s["sigma"], dtype=np.float64)}


# ---- command-line flags shared by fid and prepare-ref ----------------------------------------
def add_extractor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception-weights", default=None,
                   help=f"local {INCEPTION_FILE} (or set {ENV_WEIGHTS})")
    p.add_argument("--feature-extractor", default="inception", choices=sorted(EXTRACTORS),
                   help="inception (the paper's), or tiny: a seeded stand-in for tests, not a real FID")
    p.add_argument("--fid-batch-size", type=int, default=64)


def add_bad_images_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bad-images", default="error", choices=("error", "skip"),
                   help="error: stop with the path; skip: name the unreadable image in a warning and leave it out")


def check_counts(args, names) -> None:
    from manifold_lab.checks import check_positive

    for name in names:
        if getattr(args, name) is not None:
            check_positive("--" + name.replace("_", "-"), getattr(args, name), integer=True)
