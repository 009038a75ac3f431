"""qcore-cpu-native: compiled, exact int8/int4 linear kernels for x86 CPUs, chosen by ISA at run time.

Importing this package does nothing: the library is loaded, and the CPU probed, when the plugin's hooks
or kernels are first used.
"""
