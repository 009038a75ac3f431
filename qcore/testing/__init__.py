"""The conformance kit: the suite every backend runs, as a runner and as a pytest plugin.

- ``qcore conformance BACKEND [--device cpu|cuda] [--report DIR]`` (see
  `qcore.commands.conformance`) runs it and prints the matrix;
- ``pytest -p qcore.testing --qcore-backend NAME`` runs the same cases as
  pytest items, and gives plugin authors the `qcore_manager` fixture.

The oracle is the ``cpu-reference`` backend; the thresholds and fixed vectors
are in ``specs/conformance/``. The cases live by op (`quantize_cases`,
`pack_cases`, `linear_cases`) and by kind of check (`exact_cases`: exact
expected values held to a kernel's declared accumulation; `rejects`: inputs a
kernel must refuse); `rules` maps every rule of docs/numerics.md to the cases
that check it and generates the page's table. The pytest part needs pytest;
the runner does not.
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
