"""docs/DESIGN.md matches the code: every module listed exactly once, and the frame walk's files exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_module_table_is_generated_from_the_code():
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "design_modules.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_module_listed_once():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    listed = re.findall(r"^\| [^|]+ \| `([^`]+\.py)` \|", text, flags=re.M)
    assert len(listed) == len(set(listed)), "a module is listed twice"
    on_disk = {p.relative_to(REPO).as_posix() for folder in ("common", "device", "server", "experiments")
               for p in (REPO / folder).rglob("*.py")
               if "/proto/" not in p.as_posix() and "/oip_proto/" not in p.as_posix()
               and ("/assets/" not in p.as_posix() or p.name == "__init__.py" and p.parent.name == "assets")}
    assert on_disk - set(listed) == set(), f"modules missing from DESIGN.md: {sorted(on_disk - set(listed))}"
    assert set(listed) - on_disk == set(), f"DESIGN.md lists modules that do not exist: {sorted(set(listed) - on_disk)}"


def test_every_file_the_frame_walk_names_exists():
    text = (REPO / "docs" / "DESIGN.md").read_text()
    walk = text.split("## A frame's walk", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:common|device|server|proto)/[\w/]+\.(?:py|proto))", walk))
    assert len(named) >= 8, "the walk should name the files a frame passes through"
    missing = [n for n in named if not (REPO / n).exists()]
    assert not missing, f"the frame walk names files that do not exist: {missing}"
