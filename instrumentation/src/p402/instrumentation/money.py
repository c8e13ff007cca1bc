"""The one money type: US dollars as :class:`decimal.Decimal`, stored as integer picodollars.

Amounts never pass through binary floats. Prices are quoted per million tokens with a few
decimal places, so one picodollar (10⁻¹² USD) represents every per-token price exactly; the
ledger stores amounts as 64-bit integers of picodollars (up to about 9.2 million USD a row).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Final

__all__ = ["PICOS_PER_USD", "from_picos", "parse_usd", "to_picos", "usd_str"]

PICOS_PER_USD: Final = 10**12
_PICO: Final = Decimal(1).scaleb(-12)


def to_picos(amount: Decimal) -> int:
    """USD → integer picodollars, rounding half-even below the picodollar."""
    return int((amount / _PICO).to_integral_value(rounding=ROUND_HALF_EVEN))


def from_picos(picos: int) -> Decimal:
    """Integer picodollars → USD, exact."""
    return Decimal(picos).scaleb(-12)


def usd_str(amount: Decimal) -> str:
    """A plain decimal string with no exponent and no trailing zeros: ``0.0005331``."""
    text = format(amount.normalize(), "f")
    return text if text != "-0" else "0"


def parse_usd(value: object) -> Decimal:
    """Read an amount from a decimal string or an integer; anything else is a ValueError.

    Binary floats are refused: they cannot carry an exact amount.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"an amount must be a decimal string, not {type(value).__name__}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return amount
