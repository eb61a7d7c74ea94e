"""Options that mean the same thing in every command: lists, the model family, the cut flag.

Why: `--splits 9,60,120` worked in one command and `--splits 11 27` in another, and `-f` meant the
family in `device` but the flag in `split`. Every list option now takes both forms, and `-f` is the
family wherever a command has one (the field's `split_onnx_multi.py` spelling `-f before|after` still
works in `split` as a hidden alias of `--flag`).
Defined term: *list option*, an option taking one or more values, each possibly comma-separated.
"""

from __future__ import annotations

import argparse


def split_list(values) -> list[str]:
    """['9,60', '120'] -> ['9', '60', '120']; a plain string is split on commas too."""
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in str(item).split(",") if v.strip()]


class ListAction(argparse.Action):
    """nargs='+' where each value may be comma-separated: `--x 1,2 3` == `--x 1 2 3` == `--x 1,2,3`;
    `allow_empty`: `--x ''` is the empty list (where a command can do without any)."""

    def __init__(self, *args, allow_empty: bool = False, **kwargs):
        self.allow_empty = allow_empty
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        items = split_list(values)
        if not items and not self.allow_empty:
            parser.error(f"{option_string or self.dest}: give at least one value")
        setattr(namespace, self.dest, items)


def add_list_option(p, *names, **kwargs):
    """A list option (see `ListAction`, and its `allow_empty`); a string `default` is split the same way."""
    if isinstance(kwargs.get("default"), str):
        kwargs["default"] = split_list(kwargs["default"])
    kwargs.setdefault("nargs", "+")
    return p.add_argument(*names, action=ListAction, **kwargs)


def add_family_option(p, help_text: str = "model family when MODEL is a bare .onnx file without metadata"):
    return p.add_argument("-f", "--family", help=help_text)


def add_flag_option(p):
    """`--flag before|after`; `-f` stays a hidden alias (the field's split_onnx_multi.py spelling)."""
    help_text = "'before': the split node goes to Part II (default); 'after': it goes to Part I"
    p.add_argument("--flag", choices=("before", "after"), default="before", help=help_text)
    p.add_argument("-f", dest="flag", choices=("before", "after"), default=argparse.SUPPRESS, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------------------------- numbers in range
# `--port 70000` used to listen on 4464 (the OS keeps the low 16 bits) and `--in-flight 0` hung; every number
# option now goes through one of these argparse types, so an out-of-range value is refused in one line naming
# the option and its range before anything runs.


def number(kind=int, lo=None, hi=None, what: str = ""):
    """An argparse `type`: `kind(text)` within [lo, hi] (None: unbounded), else ArgumentTypeError."""
    import math

    def parse(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = (f"{lo}..{hi}" if hi is not None else f">= {lo}") if lo is not None else f"<= {hi}"
            raise argparse.ArgumentTypeError(f"must be {span}{what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


PORT = number(int, 0, 65535, " (0: a free port)")
POSITIVE_INT = number(int, 1)
COUNT = number(int, 0)  # a count where 0 means none / all / in this process, as each option says
THREADS = number(int, 0, 1024, " (0: onnxruntime's default)")
POSITIVE_FLOAT = number(float, 1e-9)
NONNEG = number(float, 0.0)
SECONDS = NONNEG
SCORE = number(float, 0.0, 1.0)
PERCENT = number(float, 0.0, 100.0)
# a gRPC message limit: at least 64 KiB (a frame header and some payload must fit), below gRPC's 2 GiB
MESSAGE_MB = number(float, 0.0625, 2047.0, " MiB")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (`splitinfer serve: error: argument --port: must be ...`) and
    exit code 2, like every other error of the command; the usage stays in `--help`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_data_options(p) -> None:
    """`--data`, `--gt`, `--max-images`, `--start`: the frames `sweep` and `study` run on."""
    p.add_argument("--data", help="folder of images, one image or a video (default: the bundled photos)")
    p.add_argument("--gt", help="ground truth for absolute mAP: COCO JSON or folder of 'label x1 y1 x2 y2' files")
    p.add_argument("--max-images", type=POSITIVE_INT, metavar="N",
                   help="use at most N images/frames, consecutive from --start")
    p.add_argument("--start", type=COUNT, default=0, metavar="FIRST",
                   help="first frame of a video (0-based index), or first image of a folder in name order (default 0)")


def add_run_options(p, out_default: str, batch_default: int) -> None:
    """Where and how `sweep` and `study` run: output and cache folders, workers or Ray, frames per task, and
    the switches (--fresh, --no-plots, --quiet)."""
    p.add_argument("-o", "--out-dir", default=out_default, help=f"output folder (default: {out_default})")
    p.add_argument("--cache-dir", help="activations and finished rows (default: OUT/cache)")
    p.add_argument("--workers", type=COUNT, help="local worker processes (default: one per core; 0: in this process)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="run tasks on Ray: 'auto', 'HOST:PORT', 'ray://HOST:10001', or 'local' (start one here)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=batch_default,
                   help=f"frames per task (default {batch_default}; a sequential codec's row is one task)")
    p.add_argument("--fresh", action="store_true", help="recompute every row (ignore finished rows in the cache)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def warn_random_weights(command: str, spec) -> None:
    """An export with random weights: its mAP is no result; `sweep` and `study` say so before the long run."""
    import sys

    from splitinfer.common.core.models import spec_random_weights_warning

    warning = spec_random_weights_warning(spec)
    if warning:
        print(f"splitinfer {command}: {warning}", file=sys.stderr, flush=True)
