"""The Lease backend's API clients: one a kubeconfig, and the choice of which one to call.

KubeconfigClient makes one kubeconfig into a ``kubernetes`` ApiClient fit for the election:
urllib3's retries are off (a retried call would outlive the renew deadline) and every call is
bounded by its own timeout instead (request_options); the configured server replaces the
kubeconfig's, and stays in place against the client's refresh hook (keep_our_server); on
loopback kubeadm's certificate name is verified. KubeconfigClients is the election's state
around them: calls go to the configured kubeconfig, or to kubeadm's super-admin.conf while
admin.conf has no rights yet, and a kubeconfig whose file was rewritten is loaded again. The
helpers at the end say how a call failed, in the terms of election.base's WriteResult.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from kubevipd.lazyimport import defer_kubernetes

defer_kubernetes()  # before the first kubernetes import: only the modules named below load

import urllib3  # noqa: E402
import yaml  # noqa: E402
from kubernetes.client.api.coordination_v1_api import CoordinationV1Api  # noqa: E402
from kubernetes.client.api_client import ApiClient  # noqa: E402
from kubernetes.client.configuration import Configuration  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.config.config_exception import ConfigException  # noqa: E402
from kubernetes.config.kube_config import load_kube_config  # noqa: E402

from kubevipd.election.base import ErrorKind  # noqa: E402
from kubevipd.health import tls_name  # noqa: E402
from kubevipd.kubeconfig_copy import SUPER_ADMIN, super_admin_fallback  # noqa: E402

log = logging.getLogger("kubevipd.election")

ADMIN_RETRY_S = 30.0  # while on super-admin.conf, how often to try admin.conf again

# How the election calls the API: with a function of the Lease API, through the chosen client.
Caller = Callable[[Callable[[CoordinationV1Api], Any]], Any]

# What a read through a client can end in: an error answer, no connection, a body not JSON.
READ_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)


class ElectionSetupError(Exception):
    """The kubeconfig cannot be used at all (missing, unreadable, malformed)."""


def request_options(timeout: float) -> dict[str, Any]:
    """The keyword arguments that bound one call: half of ``timeout`` to connect, half to read."""
    half = max(0.05, timeout / 2)
    return {"_request_timeout": (half, half), "_preload_content": False}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (``kubeadm certs renew``, the copier)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _one_line(e: BaseException) -> str:
    """An error's text on one log line (PyYAML's span several), or its type when it has none."""
    return " ".join(str(e).split()) or type(e).__name__


def _load(path: Path) -> Configuration:
    """The kubeconfig's current context as a client configuration (an inline CA or client
    certificate goes to a temporary file, which the client removes at exit)."""
    cfg = Configuration()
    try:
        load_kube_config(config_file=str(path), client_configuration=cfg, persist_config=False)
    except (OSError, ConfigException, ValueError, TypeError, yaml.YAMLError) as e:
        # YAMLError: kubeadm's file caught half-written, which the kubernetes client lets out.
        raise ElectionSetupError(f"cannot use kubeconfig {path}: {_one_line(e)}") from None
    return cfg


_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")


class _StringLoader(yaml.SafeLoader):  # type: ignore[misc]  # no stubs for PyYAML here
    """Every scalar but null a string, as client-go's typed fields read them: a cluster named
    1.10 stays "1.10", a context named 2024-02-30 is no date that does not exist."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, Any]]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def _entries(doc: dict[str, Any], key: str, inner: str) -> dict[str, dict[str, Any]]:
    """A kubeconfig's named list (``clusters``, ``contexts``) as name -> its inner mapping."""
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise ValueError(f"{key} is not a list")
    return {
        str(item.get("name")): item[inner]
        for item in items
        if isinstance(item, dict) and isinstance(item.get(inner), dict)
    }


def kubeconfig_ca(path: Path, relative_to: Path | None = None) -> str | None:
    """The PEM of the CA that the kubeconfig's current context trusts for its apiserver (None:
    it names none, the system's CAs apply), for the health check of a node that runs no
    election. Only that cluster entry is read: no credentials are loaded and no exec plugin
    runs. As kubectl: current-context, its context's cluster, that cluster's
    certificate-authority-data, else its certificate-authority (a relative path is the
    kubeconfig's directory's: ``relative_to``, the original's when ``path`` is a copy).
    Beyond kubectl, a kubeconfig with no current-context and one cluster names that one.
    Anything unusable, whatever the shape of the file, is an ElectionSetupError: waited for."""
    try:
        return _kubeconfig_ca(path, relative_to or path.parent)
    except ElectionSetupError:
        raise
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, yaml.YAMLError) as e:
        # ValueError includes binascii.Error and UnicodeDecodeError.
        raise ElectionSetupError(f"cannot use kubeconfig {path}: {_one_line(e)}") from None


def _kubeconfig_ca(path: Path, base: Path) -> str | None:
    def unusable(why: str) -> ElectionSetupError:
        return ElectionSetupError(f"cannot use kubeconfig {path}: {why}")

    doc = yaml.load(path.read_text(), Loader=_StringLoader)  # a SafeLoader
    if not isinstance(doc, dict):
        raise unusable("not a kubeconfig (no mapping)")
    clusters = _entries(doc, "clusters", "cluster")
    current = doc.get("current-context")
    if current:
        context = _entries(doc, "contexts", "context").get(str(current))
        if context is None:
            raise unusable(f"its current-context {current!r} is not among its contexts")
        name = str(context.get("cluster"))
    elif len(clusters) == 1:
        (name,) = clusters
    else:
        raise unusable(f"no current-context, and {len(clusters)} clusters to choose from")
    cluster = clusters.get(name)
    if cluster is None:
        raise unusable(f"its cluster {name!r} is not among its clusters")
    data, named = cluster.get("certificate-authority-data"), cluster.get("certificate-authority")
    if data:
        pem = base64.b64decode(str(data)).decode()  # line breaks skipped, as client-go does
    elif named:
        pem = (base / str(named)).read_text()
    elif str(cluster.get("insecure-skip-tls-verify", "")).lower() == "true":
        raise unusable(f"its cluster {name!r} skips TLS verification: set health.ca_file")
    else:
        return None
    # The certificates alone, as client-go's AppendCertsFromPEM takes them: any other block
    # (a key, a CRL) is left out, and with it what ssl's two PEM readers disagree on.
    certs = _CERTIFICATE.findall(pem)
    if not certs:  # ssl takes an empty one: the system's CAs
        raise unusable(f"its cluster {name!r}'s CA is no PEM certificate")
    pem = "".join(c + "\n" for c in certs)
    try:
        ssl.create_default_context(cadata=pem)  # what the health check will load
    except (ssl.SSLError, ValueError) as e:
        raise unusable(f"its cluster {name!r}'s CA is no certificate ssl can load ({e})") from None
    return pem


class KubeconfigClient:
    """One kubeconfig's API client."""

    def __init__(self, path: Path, server: str | None, tls_server_name: str | None = None) -> None:
        self.stamp = _stamp(path)
        self.server = server
        self.tls_server_name = tls_server_name
        cfg = _load(path)
        if server:
            cfg.host = server.rstrip("/")
            hook = getattr(cfg, "refresh_api_key_hook", None)
            if hook is not None:
                # For a token user, newer clients (kubernetes 3x) copy the kubeconfig's server
                # back before every request, from this hook: that is the VIP on kubeadm.
                host = cfg.host

                def keep_our_server(c: Configuration, _hook: Any = hook) -> None:
                    _hook(c)  # it also puts itself back as the hook: put ours back after it
                    c.host = host
                    c.refresh_api_key_hook = keep_our_server

                cfg.refresh_api_key_hook = keep_our_server
        name = tls_name(cfg.host, tls_server_name)
        if name is not None:
            cfg.assert_hostname = name  # kubeadm's certificate names "kubernetes", not 127.0.0.1
        cfg.retries = False  # every call is bounded by our own timeout, not urllib3's retries
        self.path = path
        self.host: str = cfg.host
        self.ca_file: str | None = cfg.ssl_ca_cert
        self.api_client = ApiClient(cfg)
        self.api = CoordinationV1Api(self.api_client)

    def changed(self) -> bool:
        """The file was rewritten since it was loaded (and is there now)."""
        now = _stamp(self.path)
        return now is not None and now != self.stamp

    def close(self) -> None:
        pool = getattr(self.api_client.rest_client, "pool_manager", None)
        if pool is not None:
            pool.clear()


class KubeconfigClients:
    """The clients the election calls through, and which of them is in use."""

    def __init__(self, kubeconfig: Path, server: str | None) -> None:
        self._server = server
        self._primary_path = kubeconfig
        self._fallback_path = super_admin_fallback(kubeconfig)
        self._primary = KubeconfigClient(kubeconfig, server)
        self._active = self._primary
        self._fallback: KubeconfigClient | None = None
        self._next_primary_try = 0.0
        self._lock = threading.Lock()

    @property
    def ca_file(self) -> str | None:
        return self._primary.ca_file

    @property
    def kubeconfig_in_use(self) -> Path:
        return self._active.path

    def _reload_changed(self) -> None:
        """Load a kubeconfig again once its file changed: renewed certificates (``kubeadm certs
        renew``) take effect without a restart, before the old ones expire."""
        with self._lock:
            for attr in ("_primary", "_fallback"):
                old: KubeconfigClient | None = getattr(self, attr)
                if old is None or not old.changed():
                    continue
                try:
                    new = KubeconfigClient(old.path, old.server)
                except ElectionSetupError as e:  # caught mid-write: the next call tries again
                    log.debug("%s changed but cannot be used yet: %s", old.path, e)
                    continue
                setattr(self, attr, new)
                if self._active is old:
                    self._active = new
                # The old client is not closed: a watch may still be reading through it; it
                # ends within watch.WATCH_SECONDS and the next one uses the new client.
                log.info("%s changed; loaded it again", old.path)

    def _call(self, fn: Callable[[CoordinationV1Api], Any]) -> Any:
        """Run ``fn`` with the active client; handles kubeadm's super-admin.conf fallback."""
        self._reload_changed()
        with self._lock:
            active = self._active
            try_primary = active is not self._primary and time.monotonic() >= self._next_primary_try
        if try_primary:
            try:
                out = fn(self._primary.api)
            except ApiException as e:
                if e.status not in (401, 403):
                    raise
                with self._lock:
                    self._next_primary_try = time.monotonic() + ADMIN_RETRY_S
            else:
                with self._lock:
                    self._active = self._primary
                log.warning("%s works now; stopped using %s", self._primary.path, SUPER_ADMIN)
                return out
        try:
            return fn(active.api)
        except ApiException as e:
            if e.status not in (401, 403) or active is not self._primary:
                raise
            fallback = self._use_fallback(e)
            if fallback is None:
                raise
            return fn(fallback.api)

    def _use_fallback(self, e: ApiException) -> KubeconfigClient | None:
        path = self._fallback_path
        if path is None or not path.exists():
            return None
        with self._lock:
            if self._fallback is None:
                try:
                    self._fallback = KubeconfigClient(path, self._server)
                except ElectionSetupError as err:
                    log.error("%s", err)
                    return None
            self._active = self._fallback
            self._next_primary_try = time.monotonic() + ADMIN_RETRY_S
        log.warning(
            "%s is not authorized yet (HTTP %s); using %s until it is "
            "(kubeadm 1.29+ grants admin.conf its rights only at the end of kubeadm init)",
            self._primary.path,
            e.status,
            path,
        )
        return self._fallback


def kind_of_status(status: int) -> ErrorKind:
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status in (400, 422):
        return "invalid"
    if status >= 500 or status == 429:
        return "server"
    return "other"


def api_error_text(e: ApiException) -> str:
    try:
        msg = json.loads(e.body or "{}").get("message") or e.reason
    except ValueError:
        msg = e.reason
    return f"HTTP {e.status}: {msg}"


def is_timeout(e: BaseException) -> bool:
    if isinstance(e, urllib3.exceptions.NewConnectionError):
        return False  # a subclass of ConnectTimeoutError in urllib3 1.26, yet "refused"
    return isinstance(e, urllib3.exceptions.TimeoutError | TimeoutError) or "timed out" in str(e)


def net_error_text(e: BaseException, timeout: float) -> str:
    if is_timeout(e):
        return f"no answer within {timeout:.1f}s"
    reason = str(getattr(e, "reason", None) or e)
    # urllib3 prefixes the connection object's repr: "<...HTTPSConnection object at 0x..>: "
    reason = re.sub(r"^<[^>]*object at 0x[0-9a-f]+>: ", "", reason)
    return f"cannot reach the apiserver: {reason}"
