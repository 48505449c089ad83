"""The map engine: activations and their Q / C maps, exact where possible, certified otherwise.

| module | what |
|---|---|
| ``ops`` | the op table: every function an activation expression may call |
| ``expression`` | the whitelist parser: text -> typed expression tree (never ``eval``) |
| ``builtins`` | the built-in activations (formula, display text, parameters), defined once |
| ``transform`` | ``Transform``: ``gamma * (phi(alpha * x + beta) + delta)`` |
| ``activations`` | ``Activation``, ``activation(...)``, activations from Python callables |
| ``symbolic`` | the tree lowered to sympy: pieces, kinks, compiled derivatives |
| ``callables`` | finite-difference and JAX derivatives of plain callables |
| ``quadrature`` | float64 Gaussian expectations split at kinks |
| ``closed_forms`` | exact dual kernels |
| ``hermite`` | certified Hermite (Mehler) series |
| ``maps`` | ``qmap``, ``cmap``, ``local_summary`` (route dispatch) |
| ``precise`` | the mpmath route (``dps=N``) |
| ``formulas`` | closed-form K, Q, C maps and local conditions as sympy expressions |
| ``series`` | C maps as certified power series; the float series networks compose |

Nothing here imports the rest of kernelshape, and importing the package itself loads nothing.
"""

DPS_RANGE = (5, 150)  # the digits ``dps=N`` map evaluations accept (mpmath route)
