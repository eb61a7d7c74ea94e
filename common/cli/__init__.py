"""The `splitinfer` command: one subcommand per plug-in module, found by a registry.

Plug-ins are modules with `NAME`, `HELP`, `add_arguments(p)` and `run(args) -> int`. Those of the
library live in `splitinfer.common.cli.commands`; the two processes register theirs (`serve` in
`splitinfer.server.command`, `device` and `demo` in `splitinfer.device`) as entry points of the group
`splitinfer.commands`, so this layer finds them without importing upward (`common` never imports
`device` or `server`; tests/test_layers.py checks it).
"""

from __future__ import annotations

import argparse
import sys

from splitinfer.common.cli import commands as _commands_pkg
from splitinfer.common.cli.options import OneLineParser
from splitinfer.common.core.errors import UserError
from splitinfer.common.core.files import prepare_outputs


ENTRY_POINT_GROUP = "splitinfer.commands"


def _version() -> str:
    """The installed distribution's version (pyproject.toml's), or 'unknown' when run from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("splitinfer")
    except PackageNotFoundError:
        return "unknown"


def _command_modules():
    from splitinfer.common.core.plugins import plugins

    modules = [m for m in plugins(_commands_pkg.__name__, ENTRY_POINT_GROUP, "run") if hasattr(m, "add_arguments")]
    yield from sorted(modules, key=lambda m: getattr(m, "NAME", m.__name__.rsplit(".", 1)[-1]))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="splitinfer",
        description="Split inference of ONNX object detectors between a UE (device) and the network.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        name = getattr(module, "NAME", module.__name__.rsplit(".", 1)[-1])
        help_text = getattr(module, "HELP", module.__doc__.strip().splitlines()[0] if module.__doc__ else "")
        p = sub.add_parser(name, help=help_text, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p, _outputs=getattr(module, "OUTPUTS", {}))
    return parser


def output_items(args) -> list[tuple]:
    """(path, kind, option name) of every output option the command declares in `OUTPUTS` (dest -> "file" or
    "dir"; a callable `OUTPUTS(args)` returns that dict for the options it was given)."""
    declared = args._outputs(args) if callable(args._outputs) else args._outputs
    actions = list(args._parser._actions)
    for a in args._parser._actions:  # a command's own sub-commands (`models export -o`)
        for sub in (getattr(a, "choices", None) or {}).values() if isinstance(a, argparse._SubParsersAction) else ():
            actions += sub._actions
    names = {a.dest: max(a.option_strings, key=len) for a in actions if a.option_strings}
    items = []
    for dest, kind in declared.items():
        value = getattr(args, dest, None)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            items.append((path, kind, names.get(dest, dest)))
    return items


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        prepare_outputs(output_items(args))
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"splitinfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"splitinfer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
