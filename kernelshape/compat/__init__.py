"""Drop-in replacements for the APIs of other DKS/TAT implementations.

* :mod:`kernelshape.compat.dks`: the official ``dks`` package's
  ``get_transformed_activations`` (change ``from dks.base import activation_transform`` to
  ``from kernelshape.compat import dks as activation_transform``).
"""

__all__ = ["dks"]
