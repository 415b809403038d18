"""Data: toy d-dim manifolds embedded in D dims (``manifold``) and small real-image sets (``real_images``)."""
