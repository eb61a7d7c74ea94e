"""Progress bars for long work, quiet where nobody watches.

Why one helper: tqdm redraws its bar with carriage returns, which spill into logs and pipes as junk lines;
tqdm only stays quiet on its own when asked (`disable=None`). `bar(...)` is tqdm with the bar shown only
when stderr is a terminal; SPLITINFER_PROGRESS=1 forces it on, =0 off (CI logs, scripts).
"""

from __future__ import annotations

import os
import sys


def enabled() -> bool:
    """Whether progress bars are drawn: SPLITINFER_PROGRESS (1/0) if set, else stderr is a terminal."""
    forced = os.environ.get("SPLITINFER_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def bar(iterable=None, *args, disable: bool | None = False, **kwargs):
    """tqdm(iterable, ...), disabled when `disable` is true or bars are not `enabled()`."""
    from tqdm import tqdm

    return tqdm(iterable, *args, disable=bool(disable) or not enabled(), **kwargs)
