"""Strict numbers in codec specs: the one parser every codec module's parameter parsing calls.

Why: Python's `int()` and `float()` accept more than a spec should: underscores (`fq:1_0` read as `fq:10`),
surrounding blanks, a leading `+`, `inf`/`nan`, exponents (`1e1`) and non-ASCII digits. A spec is a name a
user typed or a peer sent, so a number in it is plain ASCII digits: an optional minus sign, digits, and for a
decimal at most one `.` followed by digits. Anything else is a UserError naming the parameter.
"""

from __future__ import annotations

import re

from splitinfer.common.core.errors import UserError

_INT = re.compile(r"-?[0-9]{1,9}")
_DECIMAL = re.compile(r"-?[0-9]{1,9}(?:\.[0-9]{1,9})?")


def parse_int(text: str, what: str) -> int:
    """`text` as an integer (optional '-', 1..9 ASCII digits); UserError "`what` 'text' is not an integer"."""
    if not isinstance(text, str) or _INT.fullmatch(text) is None:
        raise UserError(f"{what} {text!r} is not an integer")
    return int(text)


def parse_decimal(text: str, what: str) -> float:
    """`text` as a decimal number (optional '-', digits, optional '.digits'); UserError "... is not a number"."""
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
        raise UserError(f"{what} {text!r} is not a number")
    return float(text)
