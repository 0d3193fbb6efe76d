"""Public names loaded on first use: a package's `__getattr__` and `__dir__` from one table.

Why: `import edge_dse` (and `edge_dse.store`) must not import numpy, onnxruntime, sqlite-utils or
hnswlib; a name is imported from its module the first time someone reads it, then cached on the
package so the next read is a plain attribute.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_names(package: str, where: dict[str, str], public: list[str]) -> tuple[Callable, Callable]:
    """`__getattr__, __dir__ = lazy_names(__name__, {"Name": ".module"}, __all__)`."""
    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(where[name], package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(public))

    return __getattr__, __dir__
