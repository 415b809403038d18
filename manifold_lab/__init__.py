"""manifold_lab: test the manifold hypothesis in denoising generative models.

Convention everywhere: t in [0, 1], t = 1 is clean data, z = t * x + (1 - t) * eps.
"""
__version__ = "0.1.0"
