"""The dependency ranges the project declares (requirements*.txt, pyproject.toml) and the pins of its lock files
(locks/*.lock), parsed with `packaging`: one reader for tests/test_lock.py and the stub floor check."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def requirements_file(path: Path) -> dict[str, Requirement]:
    """name -> requirement of a pip requirements file (comments, options and `-r` lines left out)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        out[canonicalize_name(req.name)] = req
    return out


def pyproject(extras: tuple[str, ...] = ()) -> dict[str, Requirement]:
    """name -> requirement of pyproject.toml's dependencies plus the named optional-dependency groups."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def lock_pins(path: Path) -> dict[str, Version]:
    """name -> pinned version of a lock file made by pip-compile (name==version lines, hashes below them)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonicalize_name(m.group(1))] = Version(m.group(3))
    return pins


def lock_hashes(path: Path) -> dict[str, list[str]]:
    """name -> the sha256 hashes listed under its pin."""
    out: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            out[current] = []
        elif current and line.strip().startswith("--hash=sha256:"):
            out[current].append(line.strip().split(":", 1)[1].rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return out


def lower_bound(req: Requirement) -> Version | None:
    """The least version a requirement allows by its >=, ==, ~= or > clauses (None: no lower bound)."""
    bounds = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=", ">")]
    return max(bounds) if bounds else None
