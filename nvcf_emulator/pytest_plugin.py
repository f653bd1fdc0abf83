"""pytest plugin (loaded on install through the ``pytest11`` entry point).

Fixtures:

- ``nvcf``: an in-process :class:`~nvcf_emulator.Emulator`, active for the test (``requests``
  calls for ``https://api.nvcf.nvidia.com`` and its storage host reach it), on ``tmp_path``.
- ``nvcf_server``: a real socket server on 127.0.0.1 (a free port), started once per session
  (per xdist worker) and reset before each test; ``nvcf_server.url`` is its origin.

Settings come from ini lines ``nvcf_settings = max_asset_bytes=1024`` and from
``@pytest.mark.nvcf(max_asset_bytes=1024)``; the marker closest to the test wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .config import EmulatorConfig
from .emulator import Emulator
from .server import EmulatorServer

if TYPE_CHECKING:
    from .grpc_proxy import GrpcProxy


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "nvcf_settings",
        type="linelist",
        default=[],
        help="nvcf-emulator settings for the nvcf fixtures, one NAME=VALUE a line",
    )


_INI_SETTINGS = pytest.StashKey[dict[str, Any]]()
#: Settings that name a place on disk: per test, never for the whole run.
_PER_TEST = ("root_dir", "state_dir")


def pytest_configure(config: pytest.Config) -> None:
    # Parse once, at start-up, so that a typo in the ini file stops the run with its name.
    config.stash[_INI_SETTINGS] = _parse_ini(config)
    config.addinivalue_line(
        "markers",
        "nvcf(**settings): nvcf-emulator settings (EmulatorConfig fields) for this test's "
        "nvcf / nvcf_server fixture, e.g. @pytest.mark.nvcf(max_asset_bytes=1024)",
    )


def _ini_settings(config: pytest.Config) -> dict[str, Any]:
    return config.stash[_INI_SETTINGS].copy()


def _parse_ini(config: pytest.Config) -> dict[str, Any]:
    lines: list[str] = config.getini("nvcf_settings")
    pairs = {}
    for line in lines:
        name, sep, value = line.partition("=")
        if not sep:
            raise pytest.UsageError(f"nvcf_settings: expected NAME=VALUE, got {line!r}")
        pairs[name.strip()] = value.strip()
    for name in _PER_TEST:
        if name in pairs:
            raise pytest.UsageError(
                f"nvcf_settings: {name} would be shared by every test and xdist worker (each "
                f"nvcf fixture is fresh, on its own temp dir); give it to the tests that need it "
                f"with @pytest.mark.nvcf({name}=...)"
            )
    try:
        parsed = EmulatorConfig.parse(pairs)
        EmulatorConfig(**parsed)  # ranges too, once at start-up (not as an error per test)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"nvcf_settings: {exc}") from None
    return parsed


def _marker_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("nvcf"))):
        if marker.args:
            raise pytest.UsageError("@pytest.mark.nvcf takes keyword settings only")
        settings.update(marker.kwargs)
    return settings


@pytest.fixture
def nvcf(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Emulator]:
    """An active in-process NVCF emulator, fresh for this test."""
    settings = {**_ini_settings(request.config), **_marker_settings(request)}
    settings.setdefault("root_dir", tmp_path_factory.mktemp("nvcf", numbered=True))
    emulator = Emulator(**settings)
    with emulator:
        yield emulator


@pytest.fixture
def nvcf_grpc(nvcf: Emulator) -> Iterator[GrpcProxy]:
    """NVCF's gRPC gateway for the ``nvcf`` emulator, on a free loopback port: open a channel
    to ``nvcf_grpc.address``. Needs the ``grpc`` extra."""
    proxy = nvcf.serve_grpc()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def nvcf_server_session(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatorServer]:
    """The session's emulator server (use ``nvcf_server`` in tests: it also resets it)."""
    settings = _ini_settings(request.config)
    settings.setdefault("root_dir", tmp_path_factory.mktemp("nvcf-server"))
    emulator = Emulator(**settings)
    server = emulator.serve("127.0.0.1", 0)
    try:
        yield server
    finally:
        server.stop()
        emulator.close()


@pytest.fixture
def nvcf_server(
    request: pytest.FixtureRequest, nvcf_server_session: EmulatorServer
) -> EmulatorServer:
    """The emulator server on a real socket, reset to a clean state for this test."""
    nvcf_server_session.emulator.reset(**_marker_settings(request))
    return nvcf_server_session
