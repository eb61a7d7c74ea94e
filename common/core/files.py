"""Content hashes of files, read in bounded chunks (a model file may be larger than memory allows).

Why one helper: split manifests, sweep caches and recommendation profiles all name a model by the
sha256 of its bytes; one function keeps them comparable.
"""

from __future__ import annotations

import hashlib

CHUNK = 1 << 20


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
