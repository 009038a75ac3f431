"""qcore backend "triton-gpu": Triton kernels for NVIDIA GPUs.

The hook module (`plugin`) and the support checks (`support`) import neither
triton nor touch a device; the kernels (`quant_kernels`, `linear_kernels`) and
their launchers (`quantize`, `linear`) are imported on first use. The
launchers take tensors of any device, so the kernels can be checked on CPU
under ``TRITON_INTERPRET=1`` (which triton reads when a kernel is decorated,
i.e. when the kernel modules are first imported).
"""
