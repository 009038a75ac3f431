"""The conformance kit: the suite every backend runs, as a runner and as a pytest plugin.

- ``qcore conformance BACKEND [--device cpu|cuda] [--report DIR]`` (see
  `qcore.commands.conformance`) runs it and prints the matrix;
- ``pytest -p qcore.testing --qcore-backend NAME`` runs the same cases as
  pytest items, and gives plugin authors the `qcore_manager` fixture.

The oracle is the ``cpu-reference`` backend; the thresholds and fixed vectors
are in ``specs/conformance/``. The pytest part needs pytest; the runner does not.
"""

try:
    import pytest  # noqa: F401  (only to know whether the pytest plugin can load)
except ImportError:  # pragma: no cover - the runner works without pytest
    pass
else:
    from qcore.testing.pytest_plugin import (  # noqa: F401  (the hooks pytest finds with -p qcore.testing)
        ConformanceItem,
        pytest_addoption,
        pytest_collection_modifyitems,
        qcore_manager,
    )
