"""Write the module table of docs/DESIGN.md from the modules' own docstrings (first line each).

Usage: .venv/bin/python scripts/design_modules.py [--check]
Every module of common/, device/, server/ and experiments/ is listed once, in layer order; the text between the
`<!-- modules:begin -->` and `<!-- modules:end -->` markers is replaced. `--check` exits 1 when the file
differs from what would be written (tests/test_design_doc.py runs it), so the map cannot drift from the code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "DESIGN.md"
BEGIN, END = "<!-- modules:begin -->", "<!-- modules:end -->"
# Layer order, lowest first; generated protobuf code and bundled data are listed by folder only.
LAYERS = [
    ("assets", "common/assets"), ("core", "common/core"), ("split", "common/split"), ("codecs", "common/codecs"),
    ("families", "common/families"), ("transport", "common/transport"), ("eval", "common/eval"),
    ("models", "common/models"),
    ("studies", "common/studies"), ("cli", "common/cli"), ("device (UE process)", "device"),
    ("server (network process)", "server"), ("experiments (drive both processes)", "experiments"),
]
GENERATED = ("common/transport/proto", "common/transport/oip_proto")


def first_line(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    lines = [line.strip() for line in doc.strip().splitlines()]
    text = lines[0] if lines else ""
    for line in lines[1:]:  # a first sentence may run over its line
        if text.endswith((".", ":")) or not line:
            break
        text += " " + line
    return text.replace("|", "\\|")


def modules() -> list[tuple[str, str, str]]:
    rows = []
    for layer, folder in LAYERS:
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(GENERATED) or "/assets/" in rel and not rel.endswith("assets/__init__.py"):
                continue
            rows.append((layer, rel, first_line(path)))
    for folder in GENERATED:
        if (ROOT / folder).is_dir():
            rows.append(("transport", folder + "/", "generated protobuf/gRPC code (scripts/gen_proto.sh; a test checks it is fresh)"))
    rows.append(("common", "common/__init__.py", first_line(ROOT / "common/__init__.py")))
    return rows


def table() -> str:
    out = ["| layer | module | why it exists (its docstring's first line) |", "|---|---|---|"]
    out += [f"| {layer} | `{rel}` | {text} |" for layer, rel, text in modules()]
    return "\n".join(out)


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = DESIGN.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("docs/DESIGN.md: module table is stale: run scripts/design_modules.py", file=sys.stderr)
            return 1
        return 0
    DESIGN.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
