"""How numbers travel in JSON: one rule for every figure relay sends."""

from __future__ import annotations


def format_number(value: float) -> int | float:
    """Whole numbers travel as integers, so ``45`` stays ``45`` rather than ``45.0``."""
    value = float(value)
    return int(value) if value.is_integer() else value
