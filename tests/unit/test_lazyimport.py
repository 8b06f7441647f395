"""Deferred package imports: only what the daemon names is loaded, and the packages still work."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from kubevipd import lazyimport

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str, *, path: Path | None = None) -> str:
    env_path = f"{ROOT}" + (f":{path}" if path else "")
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_daemon_loads_neither_the_models_nor_the_pyroute2_entry_points() -> None:
    """Behaviour, on every kubernetes release pyproject admits: the package ``__init__``s that
    import every API class and every model never run, the two APIs the daemon uses are there,
    and only a small part of what the release ships is loaded. (Up to kubernetes 36 the API
    modules import no models at all; from 37 on each imports the few its methods name.)"""
    out = _python(
        """
        import json, pkgutil, sys
        import kubevipd.daemon, kubevipd.cleanup
        from kubevipd.lazyimport import is_deferred
        import kubernetes.client.api, kubernetes.client.models  # deferred: their __init__ waits

        def shipped(pkg):
            return sorted(m.name for m in pkgutil.iter_modules(sys.modules[pkg].__path__))

        def loaded(pkg):
            return sorted(m[len(pkg) + 1 :] for m in sys.modules if m.startswith(pkg + "."))

        pkgs = ["kubernetes", "kubernetes.client", "kubernetes.client.api",
                "kubernetes.client.models", "pyroute2"]
        print(json.dumps({
            "deferred": {p: is_deferred(p) for p in pkgs},
            "apis": [loaded("kubernetes.client.api"), shipped("kubernetes.client.api")],
            "models": [loaded("kubernetes.client.models"), shipped("kubernetes.client.models")],
            "pyroute2": ["pyroute2.ndb" in sys.modules, "pyroute2.ipdb" in sys.modules],
        }))
        """
    )
    got = json.loads(out)
    assert got["deferred"] == dict.fromkeys(got["deferred"], True)
    apis, all_apis = got["apis"]
    assert {"coordination_v1_api", "discovery_v1_api"} <= set(apis)  # the Lease, the others
    assert len(all_apis) > 20 and len(apis) <= len(all_apis) // 10, apis
    models, all_models = got["models"]
    assert len(all_models) > 200 and len(models) <= len(all_models) // 10, models
    assert got["pyroute2"] == [False, False]


def test_the_whole_packages_still_work_for_anyone_else_in_the_process() -> None:
    out = _python(
        """
        import kubevipd.election.lease, kubevipd.vip.netlink
        import kubernetes, pyroute2
        from kubernetes import client
        from kubernetes.client import *  # noqa
        print(kubernetes.__version__ != "")
        print(client.CoreV1Api.__name__, client.V1Pod.__name__, V1Lease.__name__)
        print(pyroute2.NDB.__name__, pyroute2.IPRoute.__name__)
        from kubevipd.lazyimport import is_deferred
        print(is_deferred("kubernetes.client"), is_deferred("pyroute2"))
        """
    )
    expected = ["True", "CoreV1Api", "V1Pod", "V1Lease", "NDB", "IPRoute", "False", "False"]
    assert out.split() == expected


def _package(tmp_path: Path, name: str) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import time\nRUNS = globals().get('RUNS', 0) + 1\ntime.sleep(0.05)\nBIG = 'everything'\n"
        f"from {name}.small import VALUE\n"
    )
    (pkg / "small.py").write_text("VALUE = 42\n")


def test_a_submodule_imports_without_the_package_init_and_the_init_runs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"lazypkg_{tmp_path.name.replace('-', '_')}"
    _package(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert lazyimport.defer(name, {"VALUE": f"{name}.small"}) is True
        small = __import__(f"{name}.small", fromlist=["VALUE"])
        pkg = sys.modules[name]
        assert small.VALUE == 42
        assert "RUNS" not in pkg.__dict__ and lazyimport.is_deferred(name)
        assert pkg.VALUE == 42  # a shortcut: still no __init__
        assert lazyimport.is_deferred(name)

        seen: list[str] = []
        threads = [threading.Thread(target=lambda: seen.append(pkg.BIG)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen == ["everything"] * 8
        assert pkg.RUNS == 1
        assert not lazyimport.is_deferred(name)
        with pytest.raises(AttributeError, match="no attribute 'missing'"):
            _ = pkg.missing
    finally:
        for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[m]


def test_a_package_with_its_own_lazy_attributes_still_answers_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A package whose __init__ defines a PEP 562 ``__getattr__`` (kubernetes 37's client and
    models packages do) answers its names once deferred, the first time as after."""
    name = f"lazyown_{tmp_path.name.replace('-', '_')}"
    pkg_dir = tmp_path / name
    pkg_dir.mkdir()
    (pkg_dir / "__init__.py").write_text(
        "import importlib\n"
        "def __getattr__(attr):\n"
        "    if attr == 'Model':\n"
        f"        return importlib.import_module('{name}.model').Model\n"
        "    raise AttributeError(attr)\n"
    )
    (pkg_dir / "model.py").write_text("class Model:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert lazyimport.defer(name) is True
        pkg = sys.modules[name]
        assert pkg.Model.__name__ == "Model"  # runs the __init__, then asks its own hook
        assert not lazyimport.is_deferred(name)
        assert pkg.Model is sys.modules[f"{name}.model"].Model
        with pytest.raises(AttributeError):
            _ = pkg.missing
    finally:
        for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[m]


def test_a_package_already_imported_is_left_alone() -> None:
    import json

    assert lazyimport.defer("json") is False
    assert sys.modules["json"] is json
    assert not lazyimport.is_deferred("json")


def test_only_packages_can_be_deferred() -> None:
    with pytest.raises(ImportError, match="not an importable package"):
        lazyimport.defer("kubevipd_no_such_package_anywhere")
