"""Check modules, one per notebook: ``nb00.py`` holds the tasks of ``solutions/00_*.ipynb``.

:func:`load_all` imports every ``nbNN`` module here, so adding a notebook's checks is just
dropping a new file in this folder (no list to update). A module that fails to import is
reported by name instead of breaking every other notebook's checks.
"""
from __future__ import annotations

import importlib
import pkgutil
import warnings
from typing import Dict

_LOADED: Dict[str, str] = {}  # module name -> "ok" or the import error


def load_all() -> Dict[str, str]:
    """Import all ``ktlab.grading.checks.nbNN`` modules once; return name -> status."""
    for info in pkgutil.iter_modules(__path__):
        name = info.name
        if not name.startswith("nb") or name in _LOADED:
            continue
        try:
            importlib.import_module(f"{__name__}.{name}")
            _LOADED[name] = "ok"
        except Exception as err:  # keep the other notebooks' checks usable
            _LOADED[name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"ktlab.grading.checks.{name} failed to import ({_LOADED[name]}); "
                          "its tasks cannot be checked", RuntimeWarning, stacklevel=2)
    return dict(_LOADED)
