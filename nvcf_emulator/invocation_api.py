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

from .domain.accounts import Account
from .domain.assets import Asset
from .domain.functions import (
    DEFAULT_HEALTH_URI,
    DEFAULT_INFERENCE_PORT,
    FunctionService,
    FunctionStatus,
    FunctionVersion,
)
from .domain.invocations import Invocation, InvocationService, monotonic
from .worker import staging
from .worker.containers import Container, UrlContainer, as_container

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


class InvocationAPI:
    """Functions, registered images, the worker pool and the invocation records."""

    # Provided by Emulator.
    config: EmulatorConfig
    clock: Clock
    store: BlobStore
    root: Path
    accounts: Accounts
    state: StateStore

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
        self.functions = FunctionService(
            self.clock,
            deploy_delay=lambda: self.config.deploy_delay,
            resolve_image=self.images.get,
            state=self.state,
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
        if container is not target:
            self._owned.append((container, persistent))
        return container

    def _default_account(self, nca_id: str | None) -> Account:
        if nca_id is not None:
            return Account(nca_id)
        return self.accounts.authenticate(f"Bearer {self.accounts.any_key_for(None)}")

    def add_function(
        self,
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
        while self.functions.refresh(version).status is FunctionStatus.DEPLOYING:
            if monotonic() >= deadline:
                code = adapter.health(version.health_uri, version.inference_port)
                raise RuntimeError(
                    f"function {version.name!r}: the container's health check "
                    f"GET {version.health_uri} answered {code or 'nothing'} (expected "
                    f"{version.expected_health_status}); pass health_uri= for a route your "
                    "container serves"
                )
            time.sleep(0.02)

    def register_image(self, image: str, container: Any) -> Container:
        """Run ``container`` for functions created over the API with ``containerImage: image``.

        Versions of ``image`` loaded from a ``state_dir`` (``ERROR`` until now, for want of a
        container) are redeployed with it."""
        adapter = self._container(container, False)
        self.images[image] = adapter
        self.functions.attach_image(image)
        return adapter

    def set_function_status(
        self, function_id: str, version_id: str, status: FunctionStatus | str
    ) -> None:
        """Force a version's status, e.g. ``DEGRADED`` or ``ERROR``, to test how clients cope."""
        self.functions.set_status(function_id, version_id, status)

    def function(self, function_id: str, version_id: str) -> FunctionVersion:
        for version in self.functions.all():
            if version.function_id == function_id and version.version_id == version_id:
                return version
        raise KeyError((function_id, version_id))

    # -- hooks for the emulator's life cycle --------------------------------------------------

    def _reset_invocations(self) -> None:
        self.invocation_service.clear()
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
        for container, _ in self._owned:
            container.close()
        self._owned.clear()
        if self._ram_roots is not None:
            shutil.rmtree(self._ram_roots[0].parent, ignore_errors=True)
        self._ram_roots, self._ram_checked = None, False
