"""qcore-cpu-reference: the NumPy oracle of qcore's numerics contract (docs/numerics.md).

`numerics` holds the arithmetic on NumPy arrays, `floats` the rounding to the
low-precision float formats, `packing` the canonical storage layout, `ops` the
torch-tensor kernels, and `plugin` only the registration.
"""
