"""``nvcf-emulate``: the emulator as a local server that any HTTP client can use."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TypeVar

from . import __version__
from .config import EmulatorConfig, boolean, check_base_url
from .emulator import Emulator
from .http.admin import is_loopback_host
from .server import check_host, check_idle_timeout

ENV_PREFIX = "NVCF_EMULATOR_"


_T = TypeVar("_T")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, default)


def _env_value(name: str, default: _T, kind: Callable[[str], _T]) -> _T:
    """``NVCF_EMULATOR_<name>`` read as ``kind``; a value that is not one stops with a usage
    error naming the variable (as a bad flag does)."""
    raw = _env(name)
    if raw is None or not raw.strip():
        return default
    try:
        return kind(raw.strip())
    except ValueError:
        print(
            f"nvcf-emulate: error: {ENV_PREFIX}{name}={raw!r} is not a valid {kind.__name__}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def _env_choice(name: str, default: _T, choices: Sequence[_T], kind: Callable[[str], _T]) -> _T:
    """As :func:`_env_value`, for a flag with ``choices`` (argparse checks them on the
    command line only, not on a default taken from the environment)."""
    value = _env_value(name, default, kind)
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        print(
            f"nvcf-emulate: error: {ENV_PREFIX}{name}={_env(name)!r} is not one of {listed}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return value


def _log_level(text: str) -> str:
    if text.upper() not in _LEVELS:
        raise ValueError(text)
    return text.upper()


_log_level.__name__ = "log level (" + ", ".join(_LEVELS) + ")"


def _api_keys(values: Sequence[str]) -> dict[str, str]:
    keys = {}
    for i, item in enumerate(values, 1):
        key, sep, nca = item.partition("=")
        if not sep or not key or not nca:
            # Not the value itself: it may be a key, and this goes to a terminal or a CI log.
            missing = "KEY" if not key else "=NCA_ID"
            raise argparse.ArgumentTypeError(
                f"--api-key takes KEY=NCA_ID; --api-key #{i} has no {missing} (not shown: "
                "it may hold a key)"
            )
        keys[key] = nca
    return keys


def _functions(values: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in values:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise argparse.ArgumentTypeError(f"--function takes NAME=TARGET, got {item!r}")
        out.append((name.strip(), target.strip()))
    return out


def exposure_warnings(host: str, *, admin_token: str | None, admin: bool) -> list[str]:
    """What an operator binding ``host`` beyond loopback should hear at start-up: an admin
    API anyone on the network may reset or move in time. (Upload URLs need no warning: without
    ``--public-url`` they name the origin each client called, not the bound address.)"""
    warnings = []
    if not is_loopback_host(host) and admin and not admin_token:
        warnings.append(
            f"--admin-token is not set: anyone who reaches {host} can reset the emulator, move "
            "its clock and read every account's state under /_emulator/; pass --admin-token "
            "or --no-admin"
        )
    return warnings


def build_parser() -> argparse.ArgumentParser:
    d = EmulatorConfig()
    p = argparse.ArgumentParser(
        prog="nvcf-emulate",
        description=(
            "Serve a local NVIDIA Cloud Functions emulator: the asset API, pre-signed S3 uploads "
            "and the admin API under /_emulator/. Every flag can also be set with an environment "
            f"variable named {ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT=9000)."
        ),
    )
    p.add_argument("--version", action="version", version=f"nvcf-emulate {__version__}")
    p.add_argument(
        "--host",
        default=(_env("HOST") or "").strip() or "127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=_env_value("PORT", 8000, int),
        help="port to bind; 0 picks a free one (default 8000)",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=_env_value("GRPC_PORT", None, int),
        help="also serve gRPC invocation (NVCF's gRPC gateway) on this port of --host; 0 picks "
        "a free one (needs: pip install 'nvcf-emulator[grpc]')",
    )
    p.add_argument(
        "--public-url",
        default=_env("PUBLIC_URL"),
        help="origin clients reach the server at, used in upload URLs (default: the bound address)",
    )
    p.add_argument(
        "--root-dir",
        type=Path,
        default=_env("ROOT_DIR"),
        help="directory for asset bytes (default: a temp dir removed on exit)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=_env("STATE_DIR"),
        help="keep assets and their bytes, functions, unfetched request results and the clock "
        "offset here across restarts (SQLite metadata); a --function given again keeps its ids; "
        "default: nothing survives exit",
    )
    p.add_argument(
        "--admin-token",
        default=_env("ADMIN_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on the admin API under /_emulator/",
    )
    p.add_argument(
        "--no-admin",
        action="store_true",
        default=_env_value("NO_ADMIN", False, boolean),
        help="disable the admin API under /_emulator/ (404)",
    )
    p.add_argument(
        "--storage",
        default=_env("STORAGE"),
        metavar="s3://BUCKET[/PREFIX]",
        help="keep asset bytes in an S3-compatible bucket, via boto3 and the usual AWS "
        "credential environment (default: files under --root-dir)",
    )
    p.add_argument(
        "--s3-endpoint-url",
        default=_env("S3_ENDPOINT_URL"),
        metavar="URL",
        help="endpoint of the S3-compatible service for --storage: MinIO, moto_server, ... "
        "(default: AWS)",
    )
    p.add_argument(
        "--s3-create-bucket",
        action="store_true",
        default=_env_value("S3_CREATE_BUCKET", False, boolean),
        help="create the --storage bucket at start if it does not exist",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=[k for k in (_env("API_KEYS") or "").split(",") if k],
        metavar="KEY=NCA_ID",
        help="accept only these keys, each as its account (repeatable; default: any nvapi- key)",
    )
    p.add_argument(
        "--upload-url-ttl",
        type=int,
        default=_env_value("UPLOAD_URL_TTL", d.upload_url_ttl, int),
        help=f"seconds an upload URL is valid (default {d.upload_url_ttl})",
    )
    p.add_argument(
        "--asset-ttl",
        type=int,
        default=_env_value("ASSET_TTL", d.asset_ttl, int),
        help=f"seconds an asset lives after upload (default {d.asset_ttl})",
    )
    p.add_argument(
        "--max-asset-bytes",
        type=int,
        default=_env_value("MAX_ASSET_BYTES", d.max_asset_bytes, int),
        help=f"largest upload accepted (default {d.max_asset_bytes}, S3's 5 GB)",
    )
    p.add_argument(
        "--storage-quota-bytes",
        type=int,
        default=_env_value("STORAGE_QUOTA_BYTES", 0, int) or None,
        help="total bytes stored assets may take; past it uploads get 507 (default: the disk)",
    )
    p.add_argument(
        "--upload-etag",
        choices=("md5", "opaque"),
        default=_env_choice("UPLOAD_ETAG", "md5", ("md5", "opaque"), str),
        help="ETag of an upload: its MD5 as S3 gives it (default), or an opaque token that "
        "skips hashing multi-GB bodies",
    )
    p.add_argument(
        "--header-mismatch-status",
        type=int,
        choices=(400, 403),
        default=_env_choice("HEADER_MISMATCH_STATUS", 400, (400, 403), int),
        help="status for an upload whose Content-Type/description differ (default 400, as NVCF)",
    )
    p.add_argument(
        "--function",
        action="append",
        default=[f for f in (_env("FUNCTIONS") or "").split(",") if f],
        metavar="NAME=TARGET",
        help="serve a function: TARGET is package.module:attr (a Flask/FastAPI app, a WSGI/ASGI "
        "app or a callable) or the http://host:port[/path] URL of a running container; its ids "
        "are printed at start-up (repeatable)",
    )
    p.add_argument(
        "--inference-url",
        default=_env("INFERENCE_URL", "/"),
        help="inferenceUrl of --function apps (URL targets use their own path; default /)",
    )
    p.add_argument(
        "--health-uri",
        default=_env("HEALTH_URI", "/v2/health/ready"),
        help="healthUri of --function targets (default /v2/health/ready, as NVCF)",
    )
    p.add_argument(
        "--always-async",
        action="store_true",
        default=_env_value("ALWAYS_ASYNC", False, boolean),
        help="answer every invocation with 202 first (exercise polling)",
    )
    p.add_argument(
        "--container-timeout",
        type=float,
        default=_env_value("CONTAINER_TIMEOUT", d.container_timeout, float),
        help=f"seconds a container may take (default {d.container_timeout:g})",
    )
    p.add_argument(
        "--asset-root",
        type=Path,
        default=_env("ASSET_ROOT"),
        help="where assets are staged per request (default: <root dir>/inputAssets)",
    )
    p.add_argument(
        "--ram-staging-bytes",
        type=int,
        default=_env_value("RAM_STAGING_BYTES", d.ram_staging_bytes, int),
        help="requests whose assets total at most this many bytes are staged in /dev/shm while "
        f"no --asset-root is given; 0: always on disk (default {d.ram_staging_bytes})",
    )
    p.add_argument(
        "--keep-staged",
        action="store_true",
        default=_env_value("KEEP_STAGED", False, boolean),
        help="keep each request's staged assets and output dir after it ends",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=_env_value("MAX_CONNECTIONS", 64, int),
        help="connections served at once, one thread each (default 64); when all are taken, "
        "idle keep-alive connections are closed for a new client",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=_env_value("IDLE_TIMEOUT", 30.0, float),
        help="seconds a connection may send nothing (idle, or mid-request) before it is closed "
        "(default 30)",
    )
    p.add_argument(
        "--log-level",
        default=_env_value("LOG_LEVEL", "INFO", _log_level),
        choices=_LEVELS,
        help="log level (default INFO: one access line per request)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = EmulatorConfig(
            storage_base_url=None,
            root_dir=args.root_dir,
            state_dir=args.state_dir,
            storage_quota_bytes=args.storage_quota_bytes,
            upload_etag=args.upload_etag,
            admin_token=args.admin_token,
            admin_enabled=not args.no_admin,
            storage=args.storage,
            s3_endpoint_url=args.s3_endpoint_url,
            s3_create_bucket=args.s3_create_bucket,
            api_keys=_api_keys(args.api_key),
            upload_url_ttl=args.upload_url_ttl,
            asset_ttl=args.asset_ttl,
            max_asset_bytes=args.max_asset_bytes,
            header_mismatch_status=args.header_mismatch_status,
            always_async=args.always_async,
            container_timeout=args.container_timeout,
            asset_root=args.asset_root,
            keep_staged=args.keep_staged,
            ram_staging_bytes=args.ram_staging_bytes,
        )
        functions = _functions(args.function)
        check_host(args.host, "--host")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be 0-65535, got {args.port}")
        if args.grpc_port is not None and not 0 <= args.grpc_port <= 65535:
            raise ValueError(f"--grpc-port must be 0-65535, got {args.grpc_port}")
        if args.public_url:
            check_base_url(args.public_url, "--public-url", origin_only=True)
        if args.max_connections < 1:
            raise ValueError(f"--max-connections must be at least 1, got {args.max_connections}")
        check_idle_timeout(args.idle_timeout, "--idle-timeout")
    except (ValueError, argparse.ArgumentTypeError) as exc:
        print(f"nvcf-emulate: error: {exc}", file=sys.stderr)
        return 2
    try:
        emulator = Emulator(config)
    except Exception as exc:  # e.g. no boto3, no AWS credentials, an unreachable bucket
        print(f"nvcf-emulate: error: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        server = emulator.serve(
            args.host,
            args.port,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
        )
    except (OSError, SystemExit) as exc:  # werkzeug exits after printing why the bind failed
        reason = f": {exc}" if isinstance(exc, OSError) else ""
        print(
            f"nvcf-emulate: error: cannot listen on {args.host}:{args.port}{reason}",
            file=sys.stderr,
        )
        emulator.close()
        return 1
    grpc_proxy = None
    if args.grpc_port is not None:
        try:
            grpc_proxy = emulator.serve_grpc(args.host, args.grpc_port)
        except (ImportError, OSError) as exc:
            print(f"nvcf-emulate: error: --grpc-port: {exc}", file=sys.stderr)
            server.stop()
            emulator.close()
            return 1
    if args.public_url:
        emulator.storage_url = f"{args.public_url.rstrip('/')}/{config.bucket}"
    if functions and os.getcwd() not in sys.path:  # as uvicorn does: import apps from the cwd
        sys.path.insert(0, os.getcwd())
    try:
        for name, target in functions:
            fn = emulator.add_function(
                target,
                name=name,
                inference_url=None if target.startswith("http") else args.inference_url,
                health_uri=args.health_uri,
                persistent=True,
            )
            print(
                f"nvcf-emulate function {name} functionId={fn.function_id} "
                f"versionId={fn.version_id}",
                flush=True,
            )
    except Exception as exc:
        print(f"nvcf-emulate: error: --function: {exc}", file=sys.stderr)
        server.stop()
        emulator.close()
        return 1
    except KeyboardInterrupt:  # Ctrl-C while a --function container is not healthy yet
        print("nvcf-emulate: interrupted while waiting for a --function container", file=sys.stderr)
        server.stop()
        emulator.close()
        return 128 + signal.SIGINT
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():  # a second Ctrl-C while requests in flight get their grace
            os.write(  # not print(): the main thread may be inside a write to stderr
                2,
                b"nvcf-emulate: second signal: exiting now, without waiting for requests in "
                b"flight\n",
            )
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if hasattr(signal, "SIGBREAK"):  # Windows: what CI and subprocess send (CTRL_BREAK_EVENT)
        signal.signal(signal.SIGBREAK, on_signal)
    for warning in exposure_warnings(
        args.host,
        admin_token=config.admin_token,
        admin=config.admin_enabled,
    ):
        print(f"nvcf-emulate: warning: {warning}", file=sys.stderr, flush=True)
    print(f"nvcf-emulate listening on {server.url}", flush=True)
    if grpc_proxy is not None:
        print(f"nvcf-emulate gRPC listening on {grpc_proxy.address}", flush=True)
    if config.admin_enabled:
        print(f"nvcf-emulate dashboard: {server.url}/_emulator/", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        # Stop on another thread and wait for it in short steps: a signal may be delivered to
        # any thread, and Python runs its handler only once the main thread wakes, so a main
        # thread blocked for the whole grace would not hear a second Ctrl-C until its end.
        failed: list[BaseException] = []

        def shut_down() -> None:
            try:
                server.stop()
                emulator.close()
            except BaseException as exc:
                failed.append(exc)

        stopping = threading.Thread(target=shut_down, name="nvcf-emulate-stop")
        stopping.start()
        while stopping.is_alive():
            stopping.join(0.1)
        if failed:
            raise failed[0]
    print("nvcf-emulate stopped", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
