"""`python -m manifold_lab prepare-ref`: the FID reference statistics of an image folder, and reading them.

ADM-centre-crop every image of a folder (e.g. ImageNet train), extract the Inception pool features
(evaluate/features.py) and store their statistics (``mu`` float32, ``sigma`` float64) in an npz: the
reference of the FID, in the layout the official JiT's fid_stats/jit_in{256,512}_stats.npz use, which
``load_ref_stats`` reads as well (and ``describe_ref_stats`` recognises byte for byte).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from manifold_lab.evaluate.features import (
    FileImages,
    add_bad_images_flag,
    add_extractor_flags,
    check_counts,
    extract,
    extractor,
    fidelity_kwargs,
    stats_from_features,
)
from manifold_lab.io import atomic_write


def prepare_ref(image_dir, out_path, *, img_size: int, kind: str = "inception", weights: str | None = None,
                batch_size: int = 64, max_images: int | None = None, bad_images: str = "error",
                verbose: bool = True, prc_out=None) -> Path:
    """Centre-crop every image under image_dir, extract FID features, write an npz: mu float32 (D,), sigma
    float64 (D, D) (D = 2048 for Inception: what LTH14's torch-fidelity reads with np.load(f)['mu'] /
    ['sigma'] and checks dtype by dtype), plus extractor, img_size and num_images (ignored there).
    bad_images "skip" leaves unreadable files out (each named in a warning)."""
    from manifold_lab.data.imagefolder import list_images

    kw = fidelity_kwargs(kind, weights, batch_size=batch_size, verbose=verbose)
    data = FileImages(list_images(image_dir)[:max_images], img_size, bad_images)
    feats = extract(data, extractor(kw), kw, verbose)
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


# ---- command line ----------------------------------------------------------------------------------
def register(subparsers) -> None:
    q = subparsers.add_parser("prepare-ref", help="build FID reference statistics from an image folder",
                              allow_abbrev=False)
    q.add_argument("--data-path", required=True, help="image folder, e.g. ImageNet train (searched recursively)")
    q.add_argument("--img-size", type=int, required=True, help="ADM centre-crop size (256 or 512 in the paper)")
    q.add_argument("--out", required=True, help="output npz (mu, sigma)")
    q.add_argument("--max-images", type=int, default=None)
    q.add_argument("--prc-out", default=None, help="also write the reference features (for precision/recall; "
                   "ADM uses 10K images) to this npz")
    add_extractor_flags(q)
    add_bad_images_flag(q)
    q.set_defaults(func=_main_ref)




def _main_ref(args) -> int:
    from manifold_lab.io import check_writable_file

    check_counts(args, ("fid_batch_size", "img_size", "max_images"))
    check_writable_file(args.out, "--out")
    out = prepare_ref(args.data_path, args.out, img_size=args.img_size, kind=args.feature_extractor,
                      weights=args.inception_weights, batch_size=args.fid_batch_size, max_images=args.max_images,
                      bad_images=args.bad_images, prc_out=args.prc_out)
    print(f"wrote reference statistics {out}")
    return 0
