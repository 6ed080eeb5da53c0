"""The benchmark harness: suites -> cells (``config`` loads a suite: ``recipes``, ``schema`` built from the
``registry``, ``schema_errors``; ``cells`` expands it into typed ``bench.spec.Cell`` values), the result store
(``store``, around the one run-folder writer ``bench.run_folder``; ``migrate`` across a change of cell ids),
W&B tracking (``tracking``), tables (``collect``, ``collect_options``, ``stats``) and figures (``figures``);
sweeps (``sweep``) and their executors (``jobs``, ``slurm``, ``dryrun``); ``show``.

Import the submodule you need (``from bench.harness.cells import expand``): the package itself loads
nothing, so a training process does not pay for the suite schema (pydantic)."""
