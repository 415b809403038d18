"""FID and IS the way the paper measures them: torch-fidelity's Inception-v3, against a reference stats file.

* ``prepare-ref``: ADM-centre-crop every image of a folder (e.g. ImageNet train) and store the Inception
  pool-feature statistics (``mu``, ``sigma``) in an npz: the reference of the FID.
* ``fid``: FID and IS of a folder of sample PNGs. Features come from one torch-fidelity pass (the same
  extraction ``torch_fidelity.calculate_metrics`` runs); IS uses the logits, FID the 2048-d pool features
  against the reference file (what the paper's customised torch-fidelity does with
  ``fid_statistics_file``).

Nothing is downloaded: the Inception weights are a local file given by ``--inception-weights`` or the
``MANIFOLD_LAB_INCEPTION_WEIGHTS`` environment variable. ``--feature-extractor tiny`` selects a small,
seeded, locally built conv net that stands in for Inception in tests (its numbers are not FIDs).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from manifold_lab.io import atomic_write, write_json

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


def _extractor(kw: dict):
    from torch_fidelity.utils import create_feature_extractor

    layers = sorted({kw["feature_layer_fid"], kw["feature_layer_isc"]})
    return create_feature_extractor(kw["feature_extractor"], layers, **{**kw, "verbose": False})


# ---- reference statistics ----------------------------------------------------------------------------
class _FileImages(torch.utils.data.Dataset):
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


def _extract(data, fe, kw: dict, verbose: bool = False) -> dict:
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


class _NpzImages(torch.utils.data.Dataset):
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


def prepare_ref(image_dir, out_path, *, img_size: int, kind: str = "inception", weights: str | None = None,
                batch_size: int = 64, max_images: int | None = None, bad_images: str = "error",
                verbose: bool = True, prc_out=None) -> Path:
    """Centre-crop every image under image_dir, extract FID features, write an npz: mu float32 (D,), sigma
    float64 (D, D) (D = 2048 for Inception: what LTH14's torch-fidelity reads with np.load(f)['mu'] /
    ['sigma'] and checks dtype by dtype), plus extractor, img_size and num_images (ignored there).
    bad_images "skip" leaves unreadable files out (each named in a warning)."""
    from manifold_lab.data.imagefolder import list_images

    kw = fidelity_kwargs(kind, weights, batch_size=batch_size, verbose=verbose)
    data = _FileImages(list_images(image_dir)[:max_images], img_size, bad_images)
    feats = _extract(data, _extractor(kw), kw, verbose)
    stats = stats_from_features(feats[kw["feature_layer_fid"]])
    n_images = int(feats[kw["feature_layer_fid"]].shape[0])
    if prc_out:   # the features themselves, for precision/recall (evaluate/prc.py)
        from manifold_lab.evaluate.prc import save_ref_features
        save_ref_features(feats[kw["feature_layer_fid"]], prc_out, extractor=kind, image_size=img_size)

    def w(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats["mu"].astype(np.float32), sigma=stats["sigma"].astype(np.float64),
                     extractor=kind, img_size=img_size, num_images=n_images)
    return atomic_write(out_path, w)


# the official reference statistics (LTH14/JiT fid_stats/, git blob ids of the committed files)
OFFICIAL_STATS = {"3c94ea961be94d06efa9e5bf4da71eff52deaebb": "jit_in256_stats.npz",
                  "349293d82b5625afe1c66c9409f3fa198485a19f": "jit_in512_stats.npz"}


def git_blob_id(path) -> str:
    """``git hash-object`` of a file: sha1 of b"blob <size>\\0" + its bytes."""
    import hashlib

    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def describe_ref_stats(path) -> str:
    """The file, and whether it is byte for byte one of the official JiT statistics files."""
    name = OFFICIAL_STATS.get(git_blob_id(path)) if Path(path).is_file() else None
    return f"{path} (the official {name})" if name else str(path)


def load_ref_stats(path) -> dict:
    """{mu float32 (D,), sigma float64 (D, D)} from an npz holding 'mu' and 'sigma': ours (prepare-ref;
    older files have a float64 mu) or the official fid_stats/jit_in{256,512}_stats.npz. Extra keys are
    ignored; a missing, unreadable or mis-shaped file is a one-line ConfigError / FileNotFoundError."""
    from manifold_lab.checks import ConfigError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {path} not found; build them with "
                                "`python -m manifold_lab prepare-ref --data-path TRAIN_DIR --out FILE.npz`, or "
                                "pass the official fid_stats/jit_in256_stats.npz")
    try:
        with np.load(path) as z:
            if "mu" not in z or "sigma" not in z:
                raise ConfigError(f"reference statistics {path} must hold arrays 'mu' and 'sigma'; it has "
                                  f"{', '.join(z.files)}")
            mu, sigma = z["mu"], z["sigma"]
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  (np.load raises many kinds on damaged input)
        raise ConfigError(f"cannot read reference statistics {path}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or not (np.isfinite(mu).all()
                                                                         and np.isfinite(sigma).all()):
        raise ConfigError(f"reference statistics {path}: need a finite mu (D,) and sigma (D, D), got "
                          f"{mu.shape} and {sigma.shape}")
    return {"mu": mu.astype(np.float32), "sigma": sigma.astype(np.float64)}


# ---- evaluation --------------------------------------------------------------------------------------
def evaluate_folder(samples_dir, ref_stats, *, kind: str = "inception", weights: str | None = None,
                    batch_size: int = 64, isc_splits: int = 10, bad_images: str = "error",
                    verbose: bool = False, prc_ref=None, resize: int | None = None) -> dict:
    """FID (against ``ref_stats``: an npz path or a {mu, sigma} dict) and IS of the PNGs in samples_dir.
    IS is averaged over ``isc_splits`` splits (the paper's 10), or one per sample where there are fewer.
    With ``prc_ref`` (a features npz of prepare-ref --prc-out) also precision and recall (evaluate/prc.py).
    With ``resize`` the samples are first resized to resize x resize px (evaluate/resize.py: PIL bicubic,
    antialiased when downsampling), the paper's cross-resolution evaluation (Table 12)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    kw = fidelity_kwargs(kind, weights, batch_size=batch_size, verbose=verbose)   # weights first
    ref = load_ref_stats(ref_stats) if not isinstance(ref_stats, dict) else \
        {"mu": np.asarray(ref_stats["mu"], np.float32), "sigma": np.asarray(ref_stats["sigma"], np.float64)}
    samples_dir = Path(samples_dir)
    if samples_dir.suffix == ".npz" and samples_dir.is_file():
        source = _NpzImages(samples_dir)
    elif samples_dir.is_dir() and any(samples_dir.glob("*.png")):
        source = _FileImages(sorted(str(p) for p in samples_dir.glob("*.png")), None, bad_images)
    else:
        raise FileNotFoundError(f"no PNG samples in {samples_dir} (give a folder of PNGs or a samples .npz)")
    if resize:
        from manifold_lab.evaluate.resize import ResizedImages
        source = ResizedImages(samples_dir, resize)
    kw.update(isc_splits=isc_splits)
    feats = _extract(source, _extractor(kw), kw, verbose)
    kw["isc_splits"] = max(1, min(isc_splits, feats[kw["feature_layer_isc"]].shape[0]))   # no empty split
    isc = isc_featuresdict_to_metric(feats, kw["feature_layer_isc"], **kw)
    stats = stats_from_features(feats[kw["feature_layer_fid"]])
    if stats["mu"].shape != ref["mu"].shape:
        from manifold_lab.checks import ConfigError
        raise ConfigError(f"reference statistics have {ref['mu'].shape[0]} features, the extractor gives "
                         f"{stats['mu'].shape[0]}: were they built with another feature extractor?")
    fid = fid_statistics_to_metric(stats, ref, verbose)["frechet_inception_distance"]
    out = {"fid": float(fid), "is_mean": isc["inception_score_mean"], "is_std": isc["inception_score_std"],
           "num_samples": int(feats[kw["feature_layer_fid"]].shape[0])}
    if prc_ref:
        from manifold_lab.evaluate.prc import load_ref_features, precision_recall
        out |= precision_recall(feats[kw["feature_layer_fid"]], load_ref_features(prc_ref))
    return out


# ---- command line ----------------------------------------------------------------------------------
def add_extractor_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception-weights", default=None,
                   help=f"local {INCEPTION_FILE} (or set {ENV_WEIGHTS})")
    p.add_argument("--feature-extractor", default="inception", choices=sorted(EXTRACTORS),
                   help="inception (the paper's), or tiny: a seeded stand-in for tests, not a real FID")
    p.add_argument("--fid-batch-size", type=int, default=64)


def _add_bad_images_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bad-images", default="error", choices=("error", "skip"),
                   help="error: stop with the path; skip: name the unreadable image in a warning and leave it out")


def register(subparsers) -> None:
    p = subparsers.add_parser("fid", help="FID and IS of a folder of sample PNGs against reference statistics",
                              allow_abbrev=False)
    p.add_argument("samples", help="folder of PNG samples, or a samples .npz (arr_0), e.g. from `sample`")
    p.add_argument("--ref", required=True, help="reference statistics npz (from prepare-ref, or the official "
                   "fid_stats/jit_in256_stats.npz / jit_in512_stats.npz)")
    p.add_argument("--out", default=None, help="also write the metrics to this JSON file")
    p.add_argument("--resize", type=int, default=None, help="resize the samples to this many px before measuring "
                   "(PIL bicubic, antialiased when downsampling; the paper's Table 12)")
    p.add_argument("--prc-ref", default=None, help="reference features npz (prepare-ref --prc-out): also "
                   "precision and recall (k = 3)")
    add_extractor_flags(p)
    _add_bad_images_flag(p)
    p.set_defaults(func=_main_fid)

    q = subparsers.add_parser("prepare-ref", help="build FID reference statistics from an image folder",
                              allow_abbrev=False)
    q.add_argument("--data-path", required=True, help="image folder, e.g. ImageNet train (searched recursively)")
    q.add_argument("--img-size", type=int, required=True, help="ADM centre-crop size (256 or 512 in the paper)")
    q.add_argument("--out", required=True, help="output npz (mu, sigma)")
    q.add_argument("--max-images", type=int, default=None)
    q.add_argument("--prc-out", default=None, help="also write the reference features (for precision/recall; "
                   "ADM uses 10K images) to this npz")
    add_extractor_flags(q)
    _add_bad_images_flag(q)
    q.set_defaults(func=_main_ref)


def _check_counts(args, names) -> None:
    from manifold_lab.checks import check_positive

    for name in names:
        if getattr(args, name) is not None:
            check_positive("--" + name.replace("_", "-"), getattr(args, name), integer=True)


def _main_fid(args) -> int:
    from manifold_lab.io import check_writable_file

    _check_counts(args, ("fid_batch_size",))
    if args.out is not None:
        check_writable_file(args.out, "--out")
    m = evaluate_folder(args.samples, args.ref, kind=args.feature_extractor, weights=args.inception_weights,
                        batch_size=args.fid_batch_size, bad_images=args.bad_images, verbose=True,
                        prc_ref=args.prc_ref, resize=args.resize)
    print(f"reference: {describe_ref_stats(args.ref)}")
    print(f"FID {m['fid']:.4f}  IS {m['is_mean']:.2f} ± {m['is_std']:.2f}  ({m['num_samples']} samples)")
    if "precision" in m:
        print(f"precision {m['precision']:.4f}  recall {m['recall']:.4f}")
    if args.out:
        write_json(args.out, m)
    return 0


def _main_ref(args) -> int:
    from manifold_lab.io import check_writable_file

    _check_counts(args, ("fid_batch_size", "img_size", "max_images"))
    check_writable_file(args.out, "--out")
    out = prepare_ref(args.data_path, args.out, img_size=args.img_size, kind=args.feature_extractor,
                      weights=args.inception_weights, batch_size=args.fid_batch_size, max_images=args.max_images,
                      bad_images=args.bad_images, prc_out=args.prc_out)
    print(f"wrote reference statistics {out}")
    return 0
