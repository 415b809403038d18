"""Denoising networks. Every net maps (z, t[, y]) to a tensor shaped like z; what it means is the Denoiser's business."""
