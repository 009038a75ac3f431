"""The compiled part: one plain C++ shared library (no torch or Python headers), loaded with ctypes.

Built by setuptools with the C++ compiler pip finds, so an isolated pip build needs no torch. Each ISA's
kernels live in their own file under a `#pragma GCC target`, and the library picks them at run time by
cpuid: nothing here depends on the build machine's CPU (no -march=native). `-fopenmp` links libgomp.so.1,
which resolves to the copy torch has loaded, so the kernels share torch's thread pool. The extension is
optional: where it cannot be compiled, pip still installs the package and `qcore backends` lists the
backend as unavailable with that reason (the test suite fails on it, so CI notices).
"""

import platform
import sys
from pathlib import Path

from setuptools import Extension, setup

if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
    ext_modules = []  # nothing to build: the backend reports itself unavailable, with the reason
else:
    sources = sorted(str(p) for p in Path("csrc").glob("*.cpp"))
    ext_modules = [Extension(
        "qcore_cpu_native._kernels",
        sources=sources,
        depends=sorted(str(p) for p in Path("csrc").glob("*.h")),
        language="c++",
        extra_compile_args=["-std=c++17", "-O3", "-fopenmp", "-fvisibility=hidden", "-fno-math-errno", "-ffp-contract=off"],
        extra_link_args=["-fopenmp"],
        optional=True,  # without a working compiler the package installs, and reports the library missing
    )]

setup(ext_modules=ext_modules)
