"""qcore backend plugin torch-fallback: every op on plain torch, with CPU and CUDA fast paths for linear.

Importing this package does no work; kernels are described in `plugin` and
probe the machine only when the matcher asks them.
"""
