"""Errors a user can act on.

A `UserError` carries a message meant for the person at the terminal (naming the file and the
problem); the CLI prints it on one line and exits with status 2, never with a traceback.
"""


class UserError(Exception):
    """Bad input from the user: missing file, wrong format, unknown node... Exit code 2."""


def require_file(path, what="file"):
    """Return `path` as a Path if it is an existing regular file, else raise UserError."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} is not a regular file: {p}")
    return p
