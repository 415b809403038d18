"""The benchmark suite: ``python -m benchmarks <subject> ... --out DIR`` (see benchmarks/__main__.py).

One harness (_harness: timing, the matmul rate, the environment stamp, the result schema), one module per
subject (step, forward, loader, trainer) and ``compare`` for two result files. Speed and memory targets
are checked here, by figures printed and written, never by timed tests.
"""
