"""Content hashes of files, read in bounded chunks (a model file may be larger than memory allows), and
output paths checked and made with an error a user can read.

Why one helper: split manifests, sweep caches and recommendation profiles all name a model by the
sha256 of its bytes; one function keeps them comparable. Why one output-path rule: commands wrote with
plain `open()`/`mkdir`, so a file where a folder must go or a folder that did not exist ended in a
FileExistsError / FileNotFoundError traceback, differently in each command. Defined terms: an *output
file* (a path the command writes one file to: its missing parent folders are made) and an *output
folder* (made with its parents); *in the way*: an existing file where a folder must be, or an existing
folder where a file must be. Either is one `UserError` naming the option and the path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from splitinfer.common.core.errors import UserError

CHUNK = 1 << 20


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _blocking_file(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` (itself excluded) when it is not a folder, else None."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_path(path, kind: str = "file", what: str = "") -> Path:
    """Refuse an output path with something in the way (see the module docstring), without making anything.

    `kind` is "file" or "dir"; `what` names the option in the message (e.g. `--csv`)."""
    out = Path(path)
    label = f"{what} {out}" if what else str(out)
    blocker = _blocking_file(out)
    if blocker is not None:
        raise UserError(f"{label}: {blocker} is a file, not a folder (cannot write under it)")
    if kind == "dir" and out.exists() and not out.is_dir():
        raise UserError(f"{label}: a file is in the way (expected a folder)")
    if kind == "file" and out.is_dir():
        raise UserError(f"{label}: is a folder (expected a file path)")
    return out


def output_file(path, what: str = "") -> Path:
    """An output file's path, checked, with its missing parent folders made (UserError when they cannot be)."""
    out = check_output_path(path, "file", what)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{what + ' ' if what else ''}{out}: cannot create its folder ({exc.strerror})") from None
    return out


def make_output_dir(path, what: str = "") -> Path:
    """Create `path` (and its parents) for a command's outputs; a folder that cannot be made is a UserError."""
    out = check_output_path(path, "dir", what)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc}") from None
    return out


def prepare_outputs(items) -> None:
    """A command's output paths, checked before it runs: `items` are (path, "file" or "dir", option name);
    anything in the way is a UserError naming the option; output files get their missing parent folders."""
    for path, kind, what in items:
        if path in (None, "", "-"):
            continue
        if kind == "dir":
            check_output_path(path, "dir", what)
        else:
            output_file(path, what)
