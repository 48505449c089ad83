"""kernelshape: Deep Kernel Shaping and Tailored Activation Transformations."""

__version__ = "0.1.0"
