"""Content hashes of files, read in bounded chunks (a model file may be larger than memory allows), and
output folders made with an error a user can read.

Why one helper: split manifests, sweep caches and recommendation profiles all name a model by the
sha256 of its bytes; one function keeps them comparable.
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


def make_output_dir(path) -> Path:
    """Create `path` (and its parents) for a command's outputs; a folder that cannot be made is a UserError."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc}") from None
    return out
