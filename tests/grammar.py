"""Random activation expressions from the parser's grammar (hypothesis strategies)."""

from __future__ import annotations

from hypothesis import strategies as st

CALLS = ("max", "min")  # binary ops written as calls
PARAMETRIZED = ("leaky_relu", "elu")  # op(expression, number)


def expressions(depth: int, leaves: list[str], unary: list[str],
                binary: list[str]) -> st.SearchStrategy[str]:
    """Expressions nested ``depth`` deep: leaves, ``f(e)`` / ``-(e)``, infix ``(a)op(b)``,
    ``max(a, b)``, and ``leaky_relu(e, number)``."""
    leaf = st.sampled_from(leaves)
    if depth == 0:
        return leaf
    sub = expressions(depth - 1, leaves, unary, binary)
    one = st.tuples(st.sampled_from(unary), sub).map(
        lambda t: f"-({t[1]})" if t[0] == "-" else f"{t[0]}({t[1]})")
    two = st.tuples(st.sampled_from(binary), sub, sub, leaf).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})" if t[0] in CALLS
        else f"{t[0]}({t[1]}, {t[3].replace('x', '0.7')})" if t[0] in PARAMETRIZED
        else f"({t[1]}){t[0]}({t[2]})")
    return st.one_of(sub, one, two)
