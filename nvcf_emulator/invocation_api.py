"""The Python API of the invoke path, mixed into :class:`~nvcf_emulator.Emulator`.

>>> fn = nvcf.add_function(flask_app, name="echo", inference_url="/infer", health_uri="/health")
>>> fn.function_id, fn.version_id          # or: fid, vid = nvcf.add_function(...)
>>> nvcf.register_image("my-image:1.0", flask_app)   # for functions created over the API
>>> nvcf.invocations[-1].container_headers["NVCF-ASSET-DIR"]
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import nca_id_problem
from .domain.accounts import Account
from .domain.assets import Asset
from .domain.clock import monotonic
from .domain.errors import MessageKeyError
from .domain.functions import (
    DEFAULT_HEALTH_URI,
    DEFAULT_INFERENCE_PORT,
    FunctionService,
    FunctionStatus,
    FunctionVersion,
)
from .domain.invocations import Invocation, InvocationService
from .domain.ratelimits import RateLimiter
from .worker import staging
from .worker.containers import (
    CallableContainer,
    Container,
    UrlContainer,
    as_container,
    check_takes_request,
)
from .worker.secrets import SecretFiles

if TYPE_CHECKING:
    from .config import EmulatorConfig
    from .domain.accounts import Accounts
    from .domain.clock import Clock
    from .storage.base import BlobStore
    from .storage.state import StateStore


@dataclass(frozen=True)
class FunctionRef:
    """A function version registered from Python; unpacks as ``(function_id, version_id)``."""

    function_id: str
    version_id: str
    name: str
    container: Container

    def __iter__(self) -> Iterator[str]:
        return iter((self.function_id, self.version_id))


#: camelCase create-body names of add_function's own keyword parameters: (snake_case, default).
#: Those four are NVCF create-body members, so they are taken as such; the others are refused.
_OWN_CAMEL: dict[str, tuple[str, object]] = {
    "inferenceUrl": ("inference_url", None),
    "inferencePort": ("inference_port", None),
    "healthUri": ("health_uri", DEFAULT_HEALTH_URI),
    "functionType": ("function_type", "DEFAULT"),
    "ncaId": ("nca_id", None),
    "functionId": ("function_id", None),
    "sharedWith": ("shared_with", ()),
    "startupTimeout": ("startup_timeout", 30.0),
}


class FunctionNotFoundError(MessageKeyError):
    """No such function version (a ``KeyError`` whose message names both ids)."""


class InvocationAPI:
    """Functions, registered images, the worker pool and the invocation records."""

    # Provided by Emulator.
    config: EmulatorConfig
    clock: Clock
    store: BlobStore
    root: Path
    accounts: Accounts
    state: StateStore
    #: Set by Emulator.close().
    _closed: bool = False

    def _check_open(self, what: str) -> None:
        """A ``RuntimeError`` once the emulator is closed: its temp dir, workers and routes are
        gone, so using it would only end in 500s later on."""
        if self._closed:
            raise RuntimeError(
                f"this Emulator is closed: cannot {what}. A closed emulator cannot be used "
                "again; make a new Emulator() (or leave closing to its 'with' block / fixture)"
            )

    #: Real seconds a stopping emulator with a state dir gives running requests to finish
    #: (their results are then saved); queued ones and slower ones are lost, as at a crash.
    SHUTDOWN_GRACE = 5.0

    def _init_invocations(self) -> None:
        self.images: dict[str, Container] = {}
        #: (asset root, output root) in a RAM dir made on first use, removed on close.
        self._ram_roots: tuple[Path, Path] | None = None
        self._ram_checked = False
        self._ram_lock = threading.Lock()
        self._owned: list[tuple[Container, bool]] = []  # (container, survives reset)
        self._persistent: list[FunctionVersion] = []
        self.secret_files = SecretFiles(self.root / "secrets")
        self.rate_limiter = RateLimiter(self.clock)
        self.functions = FunctionService(
            self.clock,
            deploy_delay=lambda: self.config.deploy_delay,
            resolve_image=self.images.get,
            state=self.state,
            on_secrets=self.secret_files.update,
        )
        self.invocation_service = InvocationService(
            self.clock,
            self.store,
            config=lambda: self.config,
            container_for=self.functions.container_for,
            staging_roots=self._staging_roots,
            results_dir=self.root / "results",
            state=self.state,
        )

    def _staging_roots(self, assets: Sequence[Asset]) -> tuple[Path, Path]:
        """Where a request's asset and output dirs go: the configured roots, else RAM for small
        requests (see ``ram_staging_bytes``), else ``root_dir``."""
        cfg = self.config
        small = sum(a.size or 0 for a in assets) <= cfg.ram_staging_bytes
        if small and cfg.asset_root is None and cfg.output_root is None:
            if not self._ram_checked:
                with self._ram_lock:  # worker threads: one dir, made once
                    if not self._ram_checked:
                        ram = staging.make_ram_root()
                        if ram is not None:
                            self._ram_roots = (ram / "inputAssets", ram / "response")
                        self._ram_checked = True
            if self._ram_roots is not None:
                return self._ram_roots
        return (
            cfg.asset_root or self.root / "inputAssets",
            cfg.output_root or self.root / "response",
        )

    def _load_invocations(self) -> int:
        """At start-up: the functions and the unfetched results the state dir kept."""
        return self.functions.load() + self.invocation_service.load()

    @property
    def invocations(self) -> list[Invocation]:
        """Every invocation since the last reset, oldest first (see :class:`Invocation`)."""
        return list(self.invocation_service.history)

    def _container(self, target: Any, persistent: bool) -> Container:
        container = as_container(target)
        if isinstance(container, CallableContainer) and container is not target:
            check_takes_request(container.fn)  # before the version is ACTIVE and every call fails
        if container is not target:
            self._owned.append((container, persistent))
        return container

    def _default_account(self, nca_id: str | None) -> Account:
        if nca_id is not None:
            problem = nca_id_problem(nca_id)  # the rule api_keys' NCA ids follow
            if problem:
                raise ValueError(f"nca_id {problem}")
            return Account(nca_id)
        return self.accounts.authenticate(f"Bearer {self.accounts.any_key_for(None)}")

    def add_function(
        self,
        /,
        container: Any,
        name: str = "emulated-function",
        *,
        inference_url: str | None = None,
        inference_port: int | None = None,
        health_uri: str = DEFAULT_HEALTH_URI,
        nca_id: str | None = None,
        function_id: str | None = None,
        function_type: str = "DEFAULT",
        shared_with: Iterable[str] = (),
        public: bool = False,
        wait: bool = True,
        startup_timeout: float = 30.0,
        persistent: bool = False,
        **definition: Any,
    ) -> FunctionRef:
        """Register ``container`` as a deployed function version of an account.

        ``container``: a Flask/WSGI app, a FastAPI/ASGI app, a callable taking a
        :class:`~nvcf_emulator.worker.ContainerRequest`, a :class:`Container`, an
        ``http://host:port[/path]`` URL or a ``package.module:attr`` string. The version is
        ``ACTIVE`` once its health URI answers 200 (``wait`` polls it for up to
        ``startup_timeout`` seconds and raises ``RuntimeError`` if it never does); with a
        ``deploy_delay`` setting it stays ``DEPLOYING`` until the clock has moved that far.
        ``function_id`` adds a new version to an existing function. ``definition`` takes
        other create-body members in camelCase (``description``, ``tags``, ...).

        With a ``state_dir``, a function added this way before a restart (same ``name``, same
        account, and ``function_id`` if given) is re-attached to ``container``: it keeps its
        function and version ids and takes this call's definition.
        """
        self._check_open("add a function to it")
        # NVCF's own spelling of this method's parameters (as in a create body copied from its
        # docs) is taken too; a member that only this method has is refused with its name.
        for camel in _OWN_CAMEL.keys() & definition.keys():
            snake, default = _OWN_CAMEL[camel]
            given = {
                "inference_url": inference_url,
                "inference_port": inference_port,
                "health_uri": health_uri,
                "function_type": function_type,
            }
            if snake not in given:
                raise TypeError(
                    f"add_function() got {camel}=: this is add_function's own parameter "
                    f"{snake}=, not a create-body member; pass {snake}={definition[camel]!r}"
                )
            if given[snake] != default and given[snake] != definition[camel]:
                raise TypeError(
                    f"add_function() got both {snake}={given[snake]!r} and {camel}="
                    f"{definition[camel]!r}; pass one of them (add_function spells it {snake})"
                )
        if definition:
            definition = dict(definition)
            inference_url = definition.pop("inferenceUrl", inference_url)
            inference_port = definition.pop("inferencePort", inference_port)
            health_uri = definition.pop("healthUri", health_uri)
            function_type = definition.pop("functionType", function_type)
        adapter = self._container(container, persistent)
        if inference_url is None:
            inference_url = (
                adapter.path if isinstance(adapter, UrlContainer) and adapter.path else "/"
            )
        if inference_port is None:
            inference_port = (
                adapter.port
                if isinstance(adapter, UrlContainer) and adapter.port
                else DEFAULT_INFERENCE_PORT
            )
        body = {
            **definition,
            "name": name,
            "inferenceUrl": inference_url,
            "inferencePort": inference_port,
            "healthUri": health_uri,
            "functionType": function_type,
        }
        account = self._default_account(nca_id)
        version = self.functions.add(
            account,
            adapter,
            body,
            function_id=function_id,
            shared_with=shared_with,
            public=public,
        )
        if wait and self.config.deploy_delay == 0:
            try:
                self._wait_until_active(version, adapter, startup_timeout)
            except BaseException:  # a failed add leaves nothing behind (nor a DEPLOYING entry)
                self.functions.delete(account, version.function_id, version.version_id)
                raise
        if persistent:
            self._persistent.append(version)
        return FunctionRef(version.function_id, version.version_id, name, adapter)

    def _wait_until_active(
        self, version: FunctionVersion, adapter: Container, timeout: float
    ) -> None:
        # In-process containers answer at once; a server may still be starting: poll it.
        deadline = monotonic() + (timeout if isinstance(adapter, UrlContainer) else 0)
        grpc_check = version.health.get("protocol") == "gRPC" and isinstance(adapter, UrlContainer)
        if grpc_check:
            try:  # the gRPC health check needs grpcio: no point in polling without it
                from . import grpc_proxy  # noqa: F401
            except ImportError as exc:
                raise RuntimeError(
                    f"function {version.name!r} serves gRPC (inferenceUrl /grpc), and its "
                    f"health check is a gRPC call: {exc}"
                ) from exc
        while self.functions.refresh(version).status is FunctionStatus.DEPLOYING:
            if monotonic() >= deadline:
                if grpc_check:
                    raise RuntimeError(  # health_note: what the last gRPC health check got
                        f"function {version.name!r}: {version.health_note} within "
                        f"{timeout:g} s: is the gRPC server running there and SERVING?"
                    )
                uri, port = version.health_uri, version.health_port
                code = adapter.health(uri, port)
                prefix = f"function {version.name!r}: the container's health check"
                if isinstance(adapter, UrlContainer):
                    uri = adapter.url_for(uri, port)
                    if not code:  # nothing listens there: health_uri is not what is wrong
                        raise RuntimeError(
                            f"{prefix} GET {uri} answered nothing within {timeout:g} s: is "
                            "the server running on that host and port? (start it first, or "
                            "give the URL it listens on)"
                        )
                raise RuntimeError(
                    f"{prefix} GET {uri} answered {code or 'nothing'} (expected "
                    f"{version.expected_health_status}); pass health_uri= for a route your "
                    "container serves"
                )
            time.sleep(0.02)

    def register_image(self, image: str, container: Any) -> Container:
        """Run ``container`` for functions created over the API with ``containerImage: image``.

        Versions of ``image`` loaded from a ``state_dir`` (``ERROR`` until now, for want of a
        container) are redeployed with it."""
        self._check_open("register an image on it")
        adapter = self._container(container, False)
        self.images[image] = adapter
        self.functions.attach_image(image)
        return adapter

    def set_function_status(
        self, function_id: str, version_id: str, status: FunctionStatus | str
    ) -> None:
        """Force a version's status, e.g. ``DEGRADED`` or ``ERROR``, to test how clients cope.

        ``KeyError`` for an unknown function or version, ``ValueError`` for a status that is no
        :class:`FunctionStatus` (both say which)."""
        try:
            wanted = FunctionStatus(status)
        except ValueError:
            valid = ", ".join(s.value for s in FunctionStatus)
            hint = (
                f" (did you mean {str(status).upper()!r}?)"
                if str(status).upper() in FunctionStatus.__members__
                else ""
            )
            raise ValueError(
                f"set_function_status: {status!r} is not a function status{hint}; "
                f"give one of {valid} (or a FunctionStatus member)"
            ) from None
        self.function(function_id, version_id)  # a KeyError naming both ids
        self.functions.set_status(function_id, version_id, wanted)

    def secrets_file(self, function_id: str, version_id: str) -> Path:
        """Where the container of this version finds its secrets: a ``secrets.json`` of name to
        value, as NVCF mounts it at ``/var/secrets/secrets.json``. Kept up to date as the
        secrets change (``PUT /v2/nvcf/secrets/functions/{fid}/versions/{vid}``); absent while
        the version has none. ``KeyError`` naming both ids when there is no such version::

            fid, vid = nvcf.add_function(app, secrets=[{"name": "TOKEN", "value": "s3cr3t"}])
            monkeypatch.setenv("SECRETS_PATH", str(nvcf.secrets_file(fid, vid)))
        """
        version = self.function(function_id, version_id)
        return self.secret_files.path(version.version_id)

    def container_environment(self, function_id: str, version_id: str) -> dict[str, str]:
        """The environment NVCF gives this version's container: its ``containerEnvironment``
        and the ``NVCF_*`` variables (``NVCF_FUNCTION_ID``, ``NVCF_NCA_ID``, ...), with the
        values the worker's ``NVCF-*`` headers carry. The emulator cannot set a process
        environment per function for containers in its own process: give it to a container
        you start (``subprocess.Popen(..., env={**os.environ, **env})``), or set it for a test
        (``for k, v in env.items(): monkeypatch.setenv(k, v)``). ``KeyError`` naming both ids
        when there is no such version."""
        version = self.function(function_id, version_id)
        return version.container_environment(self.config.region)

    def function(self, function_id: str, version_id: str) -> FunctionVersion:
        """The version ``version_id`` of function ``function_id`` (``KeyError`` naming both
        when there is none)."""
        versions = self.functions.all()
        for version in versions:
            if version.function_id == function_id and version.version_id == version_id:
                return version
        known = sorted(v.version_id for v in versions if v.function_id == function_id)
        if known:
            why = f"function {function_id!r} has no version {version_id!r} (its versions: "
            why += f"{', '.join(known)})"
        else:
            why = (
                f"no function {function_id!r} (asked for its version {version_id!r}); "
                "add_function() returns the ids: fid, vid = nvcf.add_function(...)"
            )
        raise FunctionNotFoundError(why)

    # -- hooks for the emulator's life cycle --------------------------------------------------

    def _reset_invocations(self) -> None:
        self.invocation_service.clear()
        self.rate_limiter.clear()
        self.functions.clear()
        self.images.clear()
        keep: list[tuple[Container, bool]] = []
        for container, persistent in self._owned:
            if persistent:
                keep.append((container, persistent))
            else:
                container.close()
        self._owned = keep
        for version in self._persistent:
            self.functions.restore(version)

    def _close_invocations(self) -> None:
        persistent = self.config.state_dir is not None
        self.invocation_service.close(grace=self.SHUTDOWN_GRACE if persistent else 0.0)
        self.secret_files.clear()  # a state dir keeps the values; the files are made at start
        for container, _ in self._owned:
            container.close()
        self._owned.clear()
        if self._ram_roots is not None:
            shutil.rmtree(self._ram_roots[0].parent, ignore_errors=True)
        self._ram_roots, self._ram_checked = None, False
