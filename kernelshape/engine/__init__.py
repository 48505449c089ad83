"""The map engine: activations and their Q / C maps, exact where possible, certified otherwise.

| module | what |
|---|---|
| ``activations`` | ``Activation``, ``Transform``, ``activation(...)``, the built-ins |
| ``expressions`` | the whitelist parser for activation text |
| ``symbolic`` | sympy pieces, kinks, compiled derivatives |
| ``callables`` | Python callables as activations |
| ``quadrature`` | float64 Gaussian expectations split at kinks |
| ``closed_forms`` | exact dual kernels |
| ``hermite`` | certified Hermite (Mehler) series |
| ``maps`` | ``qmap``, ``cmap``, ``local_summary`` (route dispatch) |
| ``precise`` | the mpmath route (``dps=N``) |

Nothing here imports the rest of kernelshape, and importing the package itself loads nothing.
"""

DPS_RANGE = (5, 1000)  # the digits ``dps=N`` map evaluations accept (mpmath route)
