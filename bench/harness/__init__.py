"""The benchmark harness: suites -> cells (``config``, ``cells``), the result store (``store``),
W&B tracking (``tracking``), tables (``collect``) and figures (``figures``); executors in ``jobs``.

Import the submodule you need (``from bench.harness.cells import expand``): the package itself loads
nothing, so a training process does not pay for the suite schema (pydantic)."""
