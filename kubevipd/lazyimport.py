"""Import a few submodules of a big package without running the package's eager ``__init__``.

Why: ``import kubernetes`` runs ``kubernetes/__init__.py``, which imports every API class and all
~700 generated models (about 20 MiB of RSS and 0.25 s at start) although kubevipd uses one API
and no models. ``import pyroute2`` loads every entry point (IPDB, NDB, the wireless and ethtool
modules: about 10 MiB) for the one ``IPRoute`` class we use. The daemon's RSS and its start-to-VIP
time are both targets (see bench/README.md), and both are mostly these imports.

How: :func:`defer` puts a module object for the package in ``sys.modules`` with the package's
real spec and ``__path__`` but without executing its ``__init__``, so ``import pkg.sub.mod``
imports only what it names. The package still behaves as itself for anyone else in the process:
the first attribute that is not there yet (``kubernetes.client.CoreV1Api``, ``pyroute2.NDB``)
runs the real ``__init__`` into the same module object, once, and is then answered from it.
``shortcuts`` names attributes that can be answered by importing one submodule instead
(``kubernetes.client.ApiClient`` is ``kubernetes.client.api_client.ApiClient``), for the
libraries' own ``from pkg import Name`` lines.

A package that is already imported is left alone: then there is nothing to save.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Mapping
from typing import Any

_DEFERRED: dict[str, dict[str, bool]] = {}


def defer(name: str, shortcuts: Mapping[str, str] | None = None) -> bool:
    """Register ``name`` (a package) as deferred; True if it was, False if already imported."""
    if name in sys.modules:
        return False
    parent_name, _, child = name.rpartition(".")
    if parent_name:
        importlib.import_module(parent_name)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an importable package")
    module = importlib.util.module_from_spec(spec)
    lock = threading.RLock()
    state = _DEFERRED[name] = {"loaded": False, "loading": False}
    table = dict(shortcuts or {})

    def load_all() -> None:
        with lock:
            if state["loaded"] or state["loading"]:
                return
            state["loading"] = True
            try:
                assert spec.loader is not None
                spec.loader.exec_module(module)
                state["loaded"] = True
            finally:
                state["loading"] = False

    def __getattr__(attr: str) -> Any:  # the PEP 562 module hook
        if not state["loaded"]:
            target = table.get(attr)
            if target is not None:
                value = getattr(importlib.import_module(target), attr)
                setattr(module, attr, value)
                return value
            # `from pkg import submodule` asks the package first: answer with the submodule.
            if importlib.util.find_spec(f"{name}.{attr}") is not None:
                return importlib.import_module(f"{name}.{attr}")
        load_all()
        try:
            return module.__dict__[attr]
        except KeyError:
            pass
        # A package that is lazy itself (PEP 562, as kubernetes 37's client and models are)
        # defined its own hook when its __init__ ran, in place of this one: ask it.
        own = module.__dict__.get("__getattr__")
        if own is not None and own is not __getattr__:
            return own(attr)
        raise AttributeError(f"module {name!r} has no attribute {attr!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[name] = module
    if parent_name:
        setattr(sys.modules[parent_name], child, module)
    return True


def is_deferred(name: str) -> bool:
    """True while package ``name`` is deferred and its ``__init__`` has not run."""
    state = _DEFERRED.get(name)
    return state is not None and not state["loaded"] and sys.modules.get(name) is not None


def defer_kubernetes() -> None:
    """Only the parts of the ``kubernetes`` client that the Lease backend uses get imported."""
    defer("kubernetes")
    defer(
        "kubernetes.client",
        {
            "ApiClient": "kubernetes.client.api_client",
            "Configuration": "kubernetes.client.configuration",
            "ApiException": "kubernetes.client.exceptions",
        },
    )
    defer("kubernetes.client.api")
    defer("kubernetes.client.models")


def defer_pyroute2() -> None:
    """``pyroute2.iproute.linux.IPRoute`` without loading every pyroute2 entry point."""
    if defer("pyroute2"):
        # What pyroute2's __init__ would have set up for the modules we do import.
        importlib.import_module("pyroute2.config")
