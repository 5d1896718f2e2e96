"""Kubernetes resource quantities as apimachinery's `resource.Quantity` reads, adds and prints them.

Printing matters because quota messages quote quantities (`requested: requests.memory=1536Mi`): a quantity
keeps the format of its suffix (binary `Ki`..`Ei`, decimal `n`..`E` or none, or an exponent `e3`) and prints
in canonical form: decimal amounts as the largest multiple-of-three exponent that keeps the number whole
(`1500` -> "1500", `2000` -> "2k", `0.5` -> "500m"), binary amounts as the largest power of 1024 that divides
them (`1536Mi`), falling back to decimal below 1024 or for fractions. A sum takes the format of its first
operand, unless that one is zero (upstream: `Quantity.Add`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_SUFFIX = {power // 10: suffix for suffix, power in _BINARY.items()}
_SPLIT = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_NANO = Decimal("1e-9")
# The decoder's words for a string that is no quantity (a 400 before anything else looks at the object).
QUANTITY_FORMAT_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"


@dataclass(frozen=True)
class Quantity:
    value: Decimal
    format: str = DECIMAL_SI

    def __add__(self, other: Quantity) -> Quantity:
        fmt = other.format if self.value == 0 else self.format
        return Quantity(self.value + other.value, fmt)

    def __str__(self) -> str:
        return format_quantity(self)


ZERO = Quantity(Decimal(0), DECIMAL_SI)


def parse_quantity(text: str | int | float) -> Quantity:
    """`"500m"`, `"16Gi"`, `"1e3"`, `2` as a Quantity; ValueError for anything else."""
    if isinstance(text, bool):
        raise ValueError(QUANTITY_FORMAT_ERROR)
    if isinstance(text, (int, float)):
        text = repr(text) if isinstance(text, float) else str(text)
    match = _SPLIT.match(text.strip())
    if not match:
        raise ValueError(QUANTITY_FORMAT_ERROR)
    number, suffix = match.groups()
    try:
        amount = Decimal(number)
    except ArithmeticError as error:
        raise ValueError(QUANTITY_FORMAT_ERROR) from error
    if suffix in _BINARY:
        value, fmt = amount * (Decimal(2) ** _BINARY[suffix]), BINARY_SI
    elif suffix in _DECIMAL:
        value, fmt = amount.scaleb(_DECIMAL[suffix]), DECIMAL_SI
    elif re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        value, fmt = amount.scaleb(int(suffix[1:])), DECIMAL_EXPONENT
    else:
        raise ValueError(QUANTITY_FORMAT_ERROR)
    # Precision below a nano is rounded up, as upstream.
    if value != value.quantize(_NANO, rounding=ROUND_CEILING):
        value = value.quantize(_NANO, rounding=ROUND_CEILING)
    return Quantity(value, fmt)


def _decimal_parts(value: Decimal) -> tuple[int, int]:
    """(mantissa, exponent) with the exponent a multiple of 3 and as large as keeps the mantissa whole."""
    sign, digits, exponent = value.normalize().as_tuple()
    mantissa = int("".join(map(str, digits)) or "0")
    shift = exponent % 3  # Python's modulo is never negative: this many factors of 10 go back into the mantissa
    mantissa, exponent = mantissa * 10**shift, exponent - shift
    return (-mantissa if sign else mantissa), exponent


def format_quantity(quantity: Quantity) -> str:
    """The canonical string (`Quantity.String()`): what the API server writes back and quota messages show."""
    value, fmt = quantity.value, quantity.format
    if value == 0:
        return "0"
    if fmt == BINARY_SI and (abs(value) < 1024 or value != value.to_integral_value()):
        fmt = DECIMAL_SI
    if fmt == BINARY_SI:
        mantissa, power = int(value), 0
        while mantissa % 1024 == 0 and power < max(_BINARY_SUFFIX):
            mantissa //= 1024
            power += 1
        return f"{mantissa}{_BINARY_SUFFIX.get(power, '')}"
    mantissa, exponent = _decimal_parts(value)
    if fmt == DECIMAL_EXPONENT:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    while exponent > max(_DECIMAL_SUFFIX):
        mantissa, exponent = mantissa * 1000, exponent - 3
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def canonical(text: str | int | float) -> str:
    return format_quantity(parse_quantity(text))
