"""The feature network of the CPU-scale image metric: a small conv net trained once per data set.

Task: **rotation prediction** (Gidaris et al. 2018), a self-supervised proxy that needs no labels and works
on any image folder: each training image is turned by 0, 90, 180 or 270 degrees and the net names the turn.
Solving it needs edges, textures and object layout, which are the features a Fréchet distance should look at.
The features are the 64 global-average-pooled channels of the last conv block (resolution-agnostic, so the
same net serves 8 px and 32 px images).

Trained once per (training images, steps, seed) under a fixed seed and cached as a state dict under
``$MANIFOLD_LAB_CACHE/features`` (see :func:`manifold_lab.io.cache_dir`).
"""
from __future__ import annotations

import torch
from torch import nn

from manifold_lab.data.imagefolder import to_model_range
from manifold_lab.data.real_images import ImageSet
from manifold_lab.io import build_lock, cache_dir, save_torch

FEATURE_DIM = 64
FEATURE_VERSION = 1   # bump when the net or its training changes, so old caches are not reused


class RotationNet(nn.Module):
    """Conv net: (B, 3, H, W) in [-1, 1] -> 64-d pooled features; ``head`` maps them to 4 rotation logits."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GroupNorm(8, w), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.GELU(),
            nn.Conv2d(2 * w, FEATURE_DIM, 3, stride=2, padding=1), nn.GroupNorm(8, FEATURE_DIM), nn.GELU(),
        )
        self.head = nn.Linear(FEATURE_DIM, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, 64)."""
        return self.body(x).mean((2, 3))


def rotate_batch(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Turn image i of x (B, C, H, W) by k[i] quarter turns (square images)."""
    out = x.clone()
    for r in range(1, 4):
        out[k == r] = torch.rot90(x[k == r], r, dims=(2, 3))
    return out


def train_feature_net(images: ImageSet, *, steps: int = 1500, batch: int = 128, lr: float = 2e-3,
                      seed: int = 0) -> tuple[RotationNet, float]:
    """Train a RotationNet on the training split. Returns (net in eval mode, final-100-step accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = RotationNet()
    data = to_model_range(torch.from_numpy(images.train))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    hits = []
    for _ in range(steps):
        x = data[torch.randint(len(data), (batch,), generator=gen)]
        k = torch.randint(4, (batch,), generator=gen)
        logits = net.head(net(rotate_batch(x, k)))
        loss = nn.functional.cross_entropy(logits, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hits.append((logits.argmax(1) == k).float().mean().item())
    tail = hits[-100:]
    return net.eval().requires_grad_(False), sum(tail) / len(tail)


def load_feature_net(images: ImageSet, *, steps: int = 1500, seed: int = 0) -> tuple[RotationNet, dict]:
    """The cached feature net for this training set (trained and saved on first use).

    Returns (net, info) with info = {"feat_net_acc": rotation accuracy at the end of training}.
    """
    path = cache_dir("features") / (
        f"rotnet-v{FEATURE_VERSION}-{images.fingerprint()}-px{images.img_size}-steps{steps}-seed{seed}.pt")
    net = RotationNet()
    with build_lock(path):       # a study's workers on a fresh machine: one trains it, the others wait for it
        if path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state["model"])
            return net.eval().requires_grad_(False), {"feat_net_acc": float(state["acc"])}
        net, acc = train_feature_net(images, steps=steps, seed=seed)
        save_torch(path, {"model": net.state_dict(), "acc": acc})
    return net, {"feat_net_acc": acc}
