"""Metrics: toy manifold metrics, image metrics, FID/IS."""
