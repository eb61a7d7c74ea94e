"""Plug-ins found one way: the registries of commands, families and codecs.

Why one way: a command, a family and a codec are each one small module; a registry lists the modules of its own
package and those other distributions declare under its entry-point group, so a user's plug-in is found like
a built-in one (`pip install` a package that names `splitinfer.families`, `splitinfer.codecs` or
`splitinfer.commands` in its entry points).

Defined terms: a *registry* is a package plus an entry-point group and a *marker*, the attribute a module must
have to count as a plug-in (helper modules of the package lack it; names starting with `_` are skipped
unread); its *plug-ins* are the package's own modules with the marker, then the group's entry points, each
loaded as a module (`module:attribute` values load the attribute). Modules are imported on discovery, so
plug-in modules keep heavy imports (torch, av, nncodec) inside their functions.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from splitinfer.common.core.errors import UserError


def package_plugins(package: str, marker: str) -> list:
    """The modules of `package` (by name order) that have the attribute `marker`."""
    pkg = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        if hasattr(module, marker):
            found.append(module)
    return found


def group_plugins(group: str) -> list:
    """What the installed distributions declare under the entry-point `group`, loaded (UserError naming the
    plug-in when it fails to load)."""
    loaded = []
    for ep in entry_points(group=group):
        try:
            loaded.append(ep.load())
        except Exception as exc:
            raise UserError(f"plug-in {ep.name} ({ep.value}) of {group} failed to load: "
                            f"{type(exc).__name__}: {exc}") from None
    return loaded


def plugins(package: str, group: str, marker: str) -> list:
    """A registry's plug-ins: `package_plugins`, then `group_plugins` (see the module docstring)."""
    return package_plugins(package, marker) + group_plugins(group)
