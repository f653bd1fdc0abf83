"""Emulator settings: one frozen dataclass for the Python API, the CLI and the pytest plugin."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .domain.accounts import DEFAULT_NCA_ID, is_bearer_token

GiB = 1024**3
#: S3's single-PUT limit, which NVCF documents as "5 GB" (S3's ``MaxSizeAllowed`` value).
MAX_ASSET_BYTES = 5 * GiB
_PATH_FIELDS = ("root_dir", "state_dir", "asset_root", "output_root")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
#: Settings a running emulator keeps (where its bytes, its state and its upload URLs live):
#: ``configure`` refuses to change them rather than pretend to.
FIXED_FIELDS = (
    "root_dir",
    "state_dir",
    "storage",
    "s3_endpoint_url",
    "s3_create_bucket",
    # Signed into every upload URL, which a running server has already built and handed out.
    "bucket",
    "region",
    "storage_base_url",
)


def boolean(text: str) -> bool:
    """A setting's text as a bool: 1/true/yes/on or 0/false/no/off, any case; else ValueError."""
    word = text.strip().lower()
    if word not in _TRUE | _FALSE:
        raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {text!r}")
    return word in _TRUE


def _did_you_mean(name: str, names: list[str]) -> str:
    """`` (did you mean X?)`` for the known name closest to a misspelt one, else ``""``."""
    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_settings_error(unknown: set[str] | list[str], *, single: bool = False) -> TypeError:
    """The TypeError for setting names that are no EmulatorConfig field, with a suggestion."""
    names = [f.name for f in dataclasses.fields(EmulatorConfig)]
    label = "unknown emulator setting" if single else "unknown emulator setting(s)"
    parts = [f"{name}{_did_you_mean(name, names)}" for name in sorted(unknown)]
    return TypeError(f"{label}: {', '.join(parts)}")


def fixed_setting_error(name: str, current: object) -> ValueError:
    """The ValueError for changing a setting in FIXED_FIELDS on a running emulator, with
    advice that works: the per-test ``nvcf`` fixture takes every setting; ``nvcf_settings``
    (the ini) takes the shared server's, except the per-test places ``root_dir``/``state_dir``."""
    if name in ("root_dir", "state_dir"):
        advice = (
            f"give it when the emulator is made, e.g. Emulator({name}=...); in pytest, use the "
            f"nvcf fixture with @pytest.mark.nvcf({name}=...) (the shared nvcf_server keeps its "
            "own temp dir for the whole session)"
        )
    else:
        advice = (
            f"give it when the emulator is made, e.g. Emulator({name}=...); in pytest, use the "
            f"nvcf fixture with @pytest.mark.nvcf({name}=...), or set it for the shared "
            f"nvcf_server in the ini (nvcf_settings = {name}=...)"
        )
    return ValueError(
        f"{name} cannot change on a running emulator (it stays {current!r}): {advice}"
    )


def check_base_url(url: object, what: str, *, origin_only: bool = False) -> str:
    """``url`` if it is an http(s) URL with a host (and, with ``origin_only``, nothing after
    the port), else a ValueError naming ``what``: upload URLs are signed for it."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http(s) URL with a host, got {url!r}")
    if origin_only and (parts.path.strip("/") or parts.query or parts.fragment):
        raise ValueError(
            f"{what} must be an origin (scheme://host[:port]) with no path, got {url!r}"
        )
    assert isinstance(url, str)
    return url


@dataclass(frozen=True)
class EmulatorConfig:
    """Every knob of an emulator. Defaults are NVCF's documented values."""

    #: Base URL of the emulated control plane; in-process mode routes requests for it.
    api_base_url: str = "https://api.nvcf.nvidia.com"
    #: Other hosts routed to the control plane in-process (NGC hosts the function API in the docs).
    extra_api_hosts: tuple[str, ...] = ("api.ngc.nvidia.com", "stg.api.nvcf.nvidia.com")
    #: Base URL that upload URLs point at. ``None``: the virtual-hosted S3 URL of ``bucket``
    #: in-process, or the server's own origin in server mode.
    storage_base_url: str | None = None
    bucket: str = "nvcf-assets"
    region: str = "us-west-2"
    #: Seconds a pre-signed upload URL stays valid (``X-Amz-Expires``).
    upload_url_ttl: int = 3600
    #: Seconds an asset lives, counted from its upload (or its creation while never uploaded).
    asset_ttl: int = 24 * 3600
    #: Largest asset accepted on upload, in bytes.
    max_asset_bytes: int = MAX_ASSET_BYTES
    #: Total bytes all stored assets may take (``None``: the disk's size). An upload that would
    #: pass it gets 507 InsufficientStorage, as a full disk does; stored assets stay intact.
    storage_quota_bytes: int | None = None
    #: ``"md5"``: the upload's ETag is the body's MD5, as S3 gives it for a single PUT.
    #: ``"opaque"``: a unique token instead, which skips hashing multi-GB bodies (MD5 caps an
    #: upload at ~0.6 GiB/s per core).
    upload_etag: str = "md5"
    #: Most asset ids ``GET /v2/nvcf/assets`` returns (NVCF does not paginate).
    list_limit: int = 1000
    #: Status for an upload whose Content-Type or description header differs from the asset's.
    #: The NVCF docs say 400; real S3 answers 403 SignatureDoesNotMatch.
    header_mismatch_status: int = 400
    #: ``{api_key: nca_id}``. Empty: any ``nvapi-`` key is accepted as ``default_nca_id``.
    api_keys: Mapping[str, str] = field(default_factory=dict)
    default_nca_id: str = DEFAULT_NCA_ID
    #: Where bytes and staging dirs live. ``None``: a temp dir removed on close.
    root_dir: Path | None = None
    #: Keep assets, functions, results and the clock offset here across restarts (SQLite
    #: metadata plus the bytes). ``None``: state lives in memory (and ``root_dir``) only.
    state_dir: Path | None = None
    #: Serve the admin API under ``/_emulator/``.
    admin_enabled: bool = True
    #: When set, admin calls need ``Authorization: Bearer <admin_token>``.
    admin_token: str | None = None
    #: Where asset bytes live: ``None`` for files under ``root_dir``, or ``s3://bucket/prefix``
    #: for an S3-compatible bucket (needs boto3; the usual AWS credential environment applies).
    storage: str | None = None
    #: Endpoint of the S3-compatible service (MinIO, ``moto_server``, ...); ``None``: AWS.
    s3_endpoint_url: str | None = None
    #: Create the ``storage`` bucket at start when it does not exist (handy with moto).
    s3_create_bucket: bool = False

    # -- invocation (pexec) and the emulated worker ------------------------------------------
    #: Poll window (``NVCF-POLL-SECONDS``) when the client sends none.
    poll_seconds: int = 60
    #: Poll window for ``Accept: text/event-stream`` calls that send none.
    sse_poll_seconds: int = 1200
    #: Largest ``NVCF-POLL-SECONDS`` accepted; above it the call is a 400.
    max_poll_seconds: int = 3600
    #: Answer every ``POST /v2/nvcf/pexec/...`` with 202 at once, so tests exercise polling
    #: deterministically (status polls then wait for the result as usual).
    always_async: bool = False
    #: Threads running containers; more invocations than this queue (positionInQueue > 0).
    worker_threads: int = 8
    #: Seconds a container may take before the client gets NVCF's inference connection error.
    #: NVCF has no fixed limit; the emulator has one so that a stuck container cannot hang a test.
    container_timeout: float = 300.0
    #: Largest request body accepted on invocation (inclusive), in bytes; above it: 413.
    max_request_bytes: int = 5242880
    #: ``NVCF-MAX-RESPONSE-SIZE-BYTES``: larger results come back as a 302 to a zip.
    max_response_bytes: int = 5242880
    #: Seconds a request record lives at most (NVCF: 1 h).
    request_ttl: int = 3600
    #: Seconds the zip URL of a large result stays valid (NVCF docs: 24 h).
    result_url_ttl: int = 24 * 3600
    #: Where assets are staged per request (``<asset_root>/<reqid>/<assetId>``).
    #: ``None``: ``<root_dir>/inputAssets`` (NVCF: ``/var/inf/inputAssets``).
    asset_root: Path | None = None
    #: Where each request's large-output dir is made. ``None``: ``<root_dir>/response``.
    output_root: Path | None = None
    #: Keep the staged asset and output dirs after a request ends (for debugging).
    keep_staged: bool = False
    #: While ``asset_root`` and ``output_root`` are unset, a request whose assets total at most
    #: this many bytes is staged in RAM (a dir under ``/dev/shm``, when that is a tmpfs with at
    #: least 1 GiB free) instead of under ``root_dir``: a per-request mkdir, copy and rmtree on
    #: disk cost more than a small container call. ``0``: always on disk. Linux only: macOS and
    #: Windows have no ``/dev/shm``, and stage every request under ``root_dir``.
    ram_staging_bytes: int = 16 * 1024 * 1024
    #: Seconds a deployed version stays ``DEPLOYING`` (on the emulator clock) before ``ACTIVE``.
    deploy_delay: float = 0.0
    #: Seconds between looks at running requests' progress files.
    progress_interval: float = 0.01

    def replace(self, **changes: Any) -> EmulatorConfig:
        """A copy with ``changes`` applied; unknown names raise ``TypeError`` naming them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise unknown_settings_error(unknown)
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        """The fields as a dataclass shows them, but the credentials: ``api_keys`` shows the
        NCA ids its keys map to, ``admin_token`` whether one is set (tracebacks, pytest's
        assertion messages and logs print configs)."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_keys" and isinstance(value, Mapping) and value:
                shown = f"<{len(value)} key(s) for {sorted(set(map(str, value.values())))}>"
            elif f.name == "admin_token" and value is not None:
                shown = "<set>"
            else:
                shown = repr(value)
            parts.append(f"{f.name}={shown}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __post_init__(self) -> None:
        for name in _BOOL_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                hint = (
                    f" (a string is not read as a yes/no here: give {name}=True or False; "
                    "the words 1/0, true/false, yes/no, on/off are for the ini's nvcf_settings "
                    "and the command line)"
                    if isinstance(value, str)
                    else ""
                )
                raise ValueError(f"{name} must be True or False, got {value!r}{hint}")
        self._check_hosts()
        self._check_api_keys()
        self._check_admin_token()
        for name in (
            "upload_url_ttl",
            "asset_ttl",
            "max_asset_bytes",
            "list_limit",
            "ram_staging_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        # Calls are routed by host and answered at the root: a path would make every call 404.
        check_base_url(self.api_base_url, "api_base_url", origin_only=True)
        if self.storage_base_url is not None:
            check_base_url(self.storage_base_url, "storage_base_url")
        if not 1 <= self.upload_url_ttl <= 604800:
            raise ValueError("upload_url_ttl must be between 1 and 604800 seconds (S3's limit)")
        quota = self.storage_quota_bytes
        if quota is not None and (
            not isinstance(quota, int) or isinstance(quota, bool) or quota < 0
        ):
            raise ValueError(f"storage_quota_bytes must be a non-negative integer, got {quota!r}")
        if self.upload_etag not in ("md5", "opaque"):
            raise ValueError(f"upload_etag must be 'md5' or 'opaque', got {self.upload_etag!r}")
        if self.header_mismatch_status not in (400, 403):
            raise ValueError("header_mismatch_status must be 400 or 403")
        if self.storage is not None and not self.storage.startswith("s3://"):
            raise ValueError(f"storage must be an s3://bucket[/prefix] URL, got {self.storage!r}")
        for name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, value := Path(value))
            if name in ("asset_root", "output_root") and value is not None:
                # Containers are told these paths (NVCF-ASSET-DIR): absolute, and fixed where
                # they were given, not moved by a later chdir (root_dir is fixed at start).
                object.__setattr__(self, name, value.absolute())
        for name in ("poll_seconds", "sse_poll_seconds", "max_poll_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "worker_threads",
            "max_request_bytes",
            "max_response_bytes",
            "request_ttl",
            "result_url_ttl",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("container_timeout", "deploy_delay", "progress_interval"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not value >= 0  # NaN too
                or (value == math.inf and name != "container_timeout")
            ):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")

    def _check_hosts(self) -> None:
        """``extra_api_hosts`` as a tuple of host names; one string is one host (or several,
        comma-separated, as in the ini), never a sequence of letters."""
        hosts: Any = self.extra_api_hosts
        if isinstance(hosts, str):
            hosts = [h.strip() for h in hosts.split(",") if h.strip()]
        elif isinstance(hosts, bytes | Mapping) or not isinstance(hosts, Iterable):
            raise ValueError(
                "extra_api_hosts must be host names, e.g. ('api.example.com',) or "
                f"'api.example.com', got {hosts!r}"
            )
        hosts = tuple(hosts)
        for host in hosts:
            if (
                not isinstance(host, str)
                or not host.strip()
                or host != host.strip()
                or "/" in host
                or (host.count(":") == 1)  # host:port (an IPv6 address has several)
            ):
                raise ValueError(
                    "extra_api_hosts must be bare host names such as 'api.example.com' "
                    f"(no scheme, port or path), got {host!r}"
                )
        object.__setattr__(self, "extra_api_hosts", hosts)

    def _check_api_keys(self) -> None:
        keys = self.api_keys
        if not isinstance(keys, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
        ):
            raise ValueError(
                "api_keys must be a mapping {api_key: nca_id} of strings, e.g. "
                f"{{'nvapi-test-key': 'my-nca-id'}}, got {_shape(keys)}"
            )
        for number, (key, nca_id) in enumerate(keys.items(), 1):
            # The key itself is never shown: it is a credential.
            if not is_bearer_token(key):
                raise ValueError(
                    f"api_keys: key #{number} (for NCA id {nca_id!r}) cannot be sent as "
                    "'Authorization: Bearer <key>': use letters, digits and - . _ ~ + / "
                    "(then = only at the end), no spaces"
                )
            problem = nca_id_problem(nca_id)
            if problem:
                raise ValueError(f"api_keys: the NCA id of key #{number} {problem}")
        problem = nca_id_problem(self.default_nca_id)
        if problem:
            raise ValueError(f"default_nca_id {problem}")

    def _check_admin_token(self) -> None:
        """``None`` (an open admin API) or a token a client can send: ``""`` used to leave the
        admin API open, and one with spaces around it or a non-ASCII letter could never match
        (the header's value is trimmed, and read as latin-1). The token is never shown."""
        token = self.admin_token
        if token is None:
            return
        if not isinstance(token, str):
            got = _shape(token)
        elif not token:
            got = "an empty string"
        elif not re.fullmatch(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?", token):
            got = "a string with spaces around it or characters a header cannot carry"
        else:
            return
        raise ValueError(
            "admin_token must be None (no token: the admin API is open) or a non-empty string "
            f"of visible ASCII characters, not starting or ending with a space, got {got}"
        )

    @classmethod
    def parse(cls, settings: Mapping[str, str]) -> dict[str, Any]:
        """Typed settings from strings (ini lines, environment): ``{"max_asset_bytes": 1024}``."""
        defaults = cls()
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for name, text in settings.items():
            if name not in types:
                raise unknown_settings_error([name], single=True)
            default = getattr(defaults, name)
            kind = types[name]
            value: Any
            if default is None and "None" in kind and text.strip().lower() in ("", "none"):
                value = None
            elif isinstance(default, bool):
                try:
                    value = boolean(text)
                except ValueError:
                    raise ValueError(f"{name} must be true or false, got {text!r}") from None
            elif isinstance(default, int) or kind == "int | None":
                value = int(text)
            elif isinstance(default, float) or kind == "float | None":
                value = float(text)
            elif isinstance(default, tuple):
                value = tuple(h.strip() for h in text.split(",") if h.strip())
            elif isinstance(default, Mapping):
                pairs = (item.partition("=") for item in text.split(",") if item.strip())
                value = {k.strip(): v.strip() for k, _, v in pairs}
            elif name in _PATH_FIELDS:
                value = Path(text)
            else:
                value = text
            out[name] = value
        return out


def nca_id_problem(nca_id: object) -> str:
    """Why ``nca_id`` cannot name an account ("" when it can). Assets are stored and signed
    under ``<nca_id>/<asset_id>``: an id with empty, ``.`` or ``..`` path segments names a
    URL path that clients and servers rewrite, so every upload URL made for it would fail;
    a control character could not go into the ``NVCF-NCAID`` header containers get."""
    if not isinstance(nca_id, str) or not nca_id:
        return f"must be a non-empty string, got {nca_id!r}"
    if any(part in ("", ".", "..") for part in nca_id.split("/")):
        return f"must not have empty, '.' or '..' parts between '/', got {nca_id!r}"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in nca_id):
        return f"must not hold control characters, got {nca_id!r}"
    # Each part is a dir name on disk: refused everywhere what Windows cannot name (a suite
    # written on Linux must not fail on a colleague's laptop only). A backslash is a path
    # separator there, ':' names a drive or a file's stream.
    bad = "".join(sorted(set(nca_id) & set(_NOT_IN_WINDOWS_NAMES)))
    if bad:
        return f"must not hold any of {bad!r} (not in a Windows file name), got {nca_id!r}"
    for part in nca_id.split("/"):
        if part[-1] in ". " or part.partition(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES:
            return (
                f"must not have parts that end in '.' or ' ' or are a Windows device name "
                f"({part!r}: Windows cannot name a dir so), got {nca_id!r}"
            )
    return ""


_NOT_IN_WINDOWS_NAMES = '\\:*?"<>|'
_WINDOWS_DEVICES = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789"]
)


def _shape(value: object) -> str:
    """What a value is, without printing it (it may hold keys)."""
    if isinstance(value, Mapping):
        kinds = sorted({f"{type(k).__name__}: {type(v).__name__}" for k, v in value.items()})
        return f"a {type(value).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(value).__name__}"


#: The on/off settings: a bool, nothing else (``"false"`` is truthy).
_BOOL_FIELDS = tuple(
    f.name for f in dataclasses.fields(EmulatorConfig) if isinstance(f.default, bool)
)
