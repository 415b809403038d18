"""`python -m manifold_lab fid`: FID and IS the way the paper measures them: torch-fidelity's Inception-v3,
against a reference stats file (evaluate/ref_stats.py: ours from ``prepare-ref`` or the official ones).

Features come from one torch-fidelity pass (evaluate/features.py, the same extraction
``torch_fidelity.calculate_metrics`` runs); IS uses the logits, FID the 2048-d pool features against the
reference file (what the paper's customised torch-fidelity does with ``fid_statistics_file``).
``--feature-extractor tiny`` selects a small, seeded, locally built conv net that stands in for Inception in
tests (its numbers are not FIDs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from manifold_lab.evaluate.features import (
    FileImages,
    NpzImages,
    add_bad_images_flag,
    add_extractor_flags,
    check_counts,
    extract,
    extractor,
    fidelity_kwargs,
    stats_from_features,
)
from manifold_lab.evaluate.ref_stats import describe_ref_stats, load_ref_stats
from manifold_lab.io import write_json


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
        source = NpzImages(samples_dir)
    elif samples_dir.is_dir() and any(samples_dir.glob("*.png")):
        source = FileImages(sorted(str(p) for p in samples_dir.glob("*.png")), None, bad_images)
    else:
        raise FileNotFoundError(f"no PNG samples in {samples_dir} (give a folder of PNGs or a samples .npz)")
    if resize:
        from manifold_lab.evaluate.resize import ResizedImages
        source = ResizedImages(samples_dir, resize)
    kw.update(isc_splits=isc_splits)
    feats = extract(source, extractor(kw), kw, verbose)
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
    add_bad_images_flag(p)
    p.set_defaults(func=_main_fid)


def _main_fid(args) -> int:
    from manifold_lab.io import check_writable_file

    check_counts(args, ("fid_batch_size",))
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
