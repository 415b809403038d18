"""The run registry: one entry per run kind, the whole contract between a study YAML (``run: toy``), its
notebook, its config, its command and its run folder.

Modules are named by string and imported on first use, so the command line and the study runner import only
the kinds they use (the registry itself imports no run module).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from manifold_lab.checks import check_choice
from manifold_lab.paths import notebooks_dir
from manifold_lab.run_files import FILES, declared


@dataclass(frozen=True)
class RunKind:
    name: str                # the kind, as a study YAML's ``run:`` names it
    module: str              # the module defining the config and the run function
    config_name: str         # the config dataclass (its fields are the notebook's parameters and the flags)
    run_name: str            # run(cfg, out_dir, *, progress) -> metrics; writes the run folder
    notebook_name: str       # the notebook under notebooks/ that a study executes per point
    command: str             # the command-line command of the kind
    help: str                # one line for the command list
    derived: tuple[str, ...] = ()   # settings computed from the config, kept in config.json["derived"]
    custom_command: bool = False    # the module's own register(sub) makes the command (else add_run_command)

    @property
    def config(self) -> type:
        return getattr(importlib.import_module(self.module), self.config_name)

    @property
    def run(self):
        return getattr(importlib.import_module(self.module), self.run_name)

    @property
    def notebook(self) -> Path:
        return notebooks_dir() / self.notebook_name

    @property
    def files(self) -> dict[str, str]:
        """The files a finished run holds besides config.json and metrics.json (key -> path in the folder)."""
        return dict(FILES[self.name])

    def declared(self) -> tuple[str, ...]:
        """Every file of a finished run: config.json, the kind's files, metrics.json."""
        return declared(self.name)


RUNS: dict[str, RunKind] = {k.name: k for k in (
    RunKind("toy", "manifold_lab.toy", "ToyConfig", "run_toy", "toy_manifold.ipynb", "toy",
            "train, sample and measure one toy manifold run"),
    RunKind("image", "manifold_lab.image_study", "ImageConfig", "run_image_point", "image_study.ipynb", "image",
            "train, sample and measure one small-image run", derived=("token_dim", "img_size", "params")),
    RunKind("intrinsic", "manifold_lab.intrinsic", "IntrinsicConfig", "run_intrinsic_point",
            "toy_intrinsic_dim.ipynb", "id",
            "intrinsic dimension of a toy cloud (x, eps, v, z_t) or of a run's samples", derived=("k",),
            custom_command=True),
    RunKind("image_id", "manifold_lab.image_id", "ImageIdConfig", "run_image_id_point",
            "image_intrinsic_dim.ipynb", "id", "intrinsic dimension of images or of their JiT patches (id --images)",
            derived=("token_dim", "n_points", "n_images_read"), custom_command=True),
    RunKind("memorisation", "manifold_lab.memorisation", "MemorisationConfig", "run_memorisation_point",
            "toy_memorisation.ipynb", "memorisation",
            "two toy models on disjoint training sets: memorisation against generalisation", derived=("k",)),
    RunKind("imagenet", "manifold_lab.imagenet_study", "ImageNetPointConfig", "run_imagenet_point",
            "imagenet_run.ipynb", "imagenet",
            "one ImageNet study point: train a JiT, choose CFG x EMA, FID/IS",
            derived=("cfg_scale", "ema", "steps")),
)}


def get(name: str) -> RunKind:
    """The kind ``name`` (one-line ConfigError naming the kinds otherwise)."""
    check_choice("run kind", name, RUNS)
    return RUNS[name]


def kind_of_notebook(notebook: str | Path) -> RunKind | None:
    """The kind whose notebook is ``notebook`` (matched by file name), None for a notebook of no kind."""
    name = Path(notebook).name
    return next((k for k in RUNS.values() if k.notebook_name == name), None)
