"""The qcore wheel carries the data an installed qcore needs without the source tree.

The conformance kit's tolerances and vectors and the demo's recipes live in
specs/ and reach the package through links; this builds the wheel, installs it
into a bare directory and uses both from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import qcore, qcore.testing.data as data, qcore.demo.run as demo
assert qcore.__file__.startswith({target!r}), qcore.__file__
print(data.spec_dir(), len(data.vectors()), data.tolerances().linear_reference_sqnr_db)
print(sorted(p.name for p in demo.RECIPES_DIR.glob("*.yaml")))
"""


def test_installed_wheel_finds_conformance_data_and_recipes(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("qcore-*.whl"))
    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("QCORE_CONFORMANCE_DIR", None)
    done = subprocess.run([sys.executable, "-c", CHECK.format(target=str(target))], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spec_dir, recipes = done.stdout.splitlines()
    assert spec_dir.startswith(str(target / "qcore" / "testing" / "conformance"))
    assert "minilm-w8a8-dynamic.yaml" in recipes
