"""The real-model demo: all-MiniLM-L6-v2 quantized offline and measured against its float self.

``python -m qcore.demo`` (``make demo``) runs `qcore.demo.run.main`. The
pieces are reused elsewhere: `models` resolves the model sources the CLI
accepts, `sentences` is the built-in calibration and evaluation set.
"""
