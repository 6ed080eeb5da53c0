"""The benchmark harness: suites -> cells (``config``, ``cells``), the result store (``store``),
W&B tracking (``tracking``), tables (``collect``) and figures (``figures``); executors in ``jobs``."""

from bench.harness.cells import Cell, cell_id, describe, expand, topological_order
from bench.harness.config import ConfigError, Suite, load_suite

__all__ = ["Cell", "ConfigError", "Suite", "cell_id", "describe", "expand", "load_suite", "topological_order"]
