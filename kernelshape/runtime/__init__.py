"""Framework runtimes: the code every exported file contains, as real, tested modules.

``numpy``, ``jax``, ``pytorch`` and ``tensorflow`` each define the expression ops (``OPS``),
transformed activations, the scaled-uniform-orthogonal (Delta) initializer and Per-Location
Normalization. They import only their framework and the standard library (never kernelshape),
so the exporter can copy their text into standalone files; the trainer imports them directly.
"""
