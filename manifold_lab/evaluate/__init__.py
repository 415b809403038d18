"""Evaluation of full-scale checkpoints: class-balanced sampling (``generate``), FID/IS (``fid``) and the
paper's CFG x EMA protocol (``sweep``)."""
