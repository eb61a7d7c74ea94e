"""One parser for link rates, with `tc`'s units, so one string means one rate in every command.

Why: `analyze --bandwidth`, `recommend --bandwidth`, `netexp --rates`, `device --shape-rate` and the
`deploy/tc` profiles all name link rates; two parsers with two syntaxes made `50MBps` megabits in one
and megabytes in `tc`. This one follows tc(8), section RATES (iproute2 `get_rate`, suffixes compared
case-insensitively):

- `bit` or a bare number: bits per second; `kbit`, `mbit`, `gbit`, `tbit`: 10^3, 10^6, 10^9, 10^12 bit/s;
- `bps`: BYTES per second; `kbps`, `mbps`, `gbps`, `tbps`: 10^3 .. 10^12 bytes/s (x 8 bit/s);
- IEC prefixes `kibit`, `mibit`, `gibit`, `tibit` (and `kibps` ...): powers of 1024.

Two spellings tc refuses are accepted, because earlier versions of our commands took them and their
meaning is unambiguous: a bare SI prefix (`500M`, `1G`, `100k`: bits per second, as `500mbit`) and
`bit/s` after a prefix (`2.5Gbit/s`). tc's `5%` (a share of the device's speed) is refused: no device here.
Defined term: *rate*, a float in bits per second.
"""

from __future__ import annotations

import math
import re

from splitinfer.common.core.errors import UserError

_SI = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_IEC = {"ki": 2.0**10, "mi": 2.0**20, "gi": 2.0**30, "ti": 2.0**40}
_RATE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)(/s)?\s*$")


def _unit_scale(unit: str, had_per_second: bool) -> float | None:
    """Bits per second of one `unit` (lower case), or None when tc and we do not know it."""
    for suffix, per in (("bit", 1.0), ("bps", 8.0)):
        if unit.endswith(suffix):
            if had_per_second and suffix == "bps":
                return None  # 'bps/s' is no unit
            prefix = unit[: -len(suffix)]
            scale = _SI.get(prefix, _IEC.get(prefix))
            return None if scale is None else scale * per
    if had_per_second:
        return None
    return _SI.get(unit)  # a bare number, or a bare SI prefix (our extension): bits per second


def parse_rate(text) -> float:
    """A rate as tc writes it ('50mbit', '1.5gbit', '800kbit', '10MBps', '2mibit', '1e6') -> bit/s.

    Numbers (int/float) are bit/s. Raises UserError naming the text for anything else.
    """
    if isinstance(text, bool):
        raise UserError(f"bad rate {text!r}: expected e.g. 50mbit, 1gbit, 800kbit, 10mbps (bytes/s)")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _RATE_RE.match(str(text).lower())
        scale = _unit_scale(m.group(2), bool(m.group(3))) if m else None
        if scale is None:
            raise UserError(f"bad rate {text!r}: expected a number and a tc unit, e.g. 50mbit, 1gbit, 800kbit "
                            f"(bits/s) or 10mbps (bytes/s)")
        value = float(m.group(1)) * scale
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"bad rate {text!r}: must be a positive, finite rate")
    return value


def rate_label(bps: float) -> str:
    """1e9 -> '1G', 5e8 -> '500M', 1e5 -> '100k': the shortest spelling that `parse_rate` reads back."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}"
