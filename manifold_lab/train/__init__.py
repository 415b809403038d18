"""Training: a small single-process loop for CPU-scale runs, and the full-scale ImageNet trainer."""
