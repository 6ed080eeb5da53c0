"""Performance benchmarks (``make bench``); each module exposes ``run(quick=False) -> dict``."""
