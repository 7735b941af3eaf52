"""Decoding pymatgen objects from untrusted JSON without running code from it.

monty's `MontyDecoder` (and pymatgen's `from_dict` methods, which call it on site properties and entry data)
imports whatever module an `"@module"` key names, at any depth, and calls the named class's `from_dict`: a file
naming an installed module runs that module's import-time code. Every such key is checked first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from monty.json import MontyDecoder

TRUSTED_MODULES = ("pymatgen.",)


class UntrustedModule(ValueError):
    """The JSON names a module outside the trusted packages."""


def module_references(obj: Any) -> Iterator[str]:
    """Every `"@module"` value in a JSON tree."""
    if isinstance(obj, dict):
        if "@module" in obj:
            yield str(obj["@module"])
        for value in obj.values():
            yield from module_references(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from module_references(value)


def check_modules(obj: Any, trusted: tuple[str, ...] = TRUSTED_MODULES) -> None:
    """Raise `UntrustedModule` when any `"@module"` in `obj` lies outside `trusted` (module name prefixes)."""
    foreign = sorted({m for m in module_references(obj) if not m.startswith(trusted)})
    if foreign:
        raise UntrustedModule(f"names module(s) outside {', '.join(trusted)}: {', '.join(foreign[:3])}; "
                              "decoding would import them, so it is refused")


def decode(obj: Any, trusted: tuple[str, ...] = TRUSTED_MODULES) -> Any:
    """`MontyDecoder().process_decoded(obj)` once every module it would import is trusted."""
    check_modules(obj, trusted)
    return MontyDecoder().process_decoded(obj)
