"""How a user names a cut: a node rank or a node name, with a flag `before`/`after`.

Why one parser: `split`, `sweep`, `netexp`, `device` and `demo` all take cuts on the command line;
one function decides what is a rank and what is a name, so `--split 60` and `--splits 9,60` agree.
Defined terms: *cut spec* (what the user typed), *rank* (an int: nodes [0, rank) are Part I).
"""

from __future__ import annotations

from splitinfer.common.core.errors import UserError

FLAGS = ("before", "after")


def parse_cut(text) -> int | str:
    """'60' -> 60 (a rank), '-1' -> -1 (refused later as out of range), 'Conv_12' -> 'Conv_12' (a node name)."""
    if isinstance(text, bool):
        raise UserError(f"bad cut {text!r}: expected a node rank or a node name")
    if isinstance(text, int):
        return text
    s = str(text).strip()
    if not s:
        raise UserError("empty cut: expected a node rank or a node name")
    body = s[1:] if s[0] in "+-" else s
    return int(s) if body.isdecimal() else s


def parse_cuts(values) -> list[int | str]:
    """Several cuts: each item may itself be comma-separated ('9,60,120' or ['9', '60', '120'])."""
    if isinstance(values, (str, int)):
        values = [values]
    return [parse_cut(v) for item in values for v in str(item).split(",") if v.strip()]


def check_flag(flag: str) -> str:
    if flag not in FLAGS:
        raise UserError(f"unknown split flag {flag!r} (expected 'before' or 'after')")
    return flag
