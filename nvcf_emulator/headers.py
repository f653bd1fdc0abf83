"""One rule for turning a request into a WSGI environ, used by in-process mode, server mode
and the worker's calls to WSGI containers.

Header names with underscores:

werkzeug's development server drops every header whose name contains ``_`` (CGI cannot tell
``A_B`` from ``A-B``), while a WSGI environ built in-process would keep them. Some NVCF clients
(ngcsdk) send ``NVCF-POLL_SECONDS``. The emulator's rule, in both modes: a header spelled with
underscores counts as its hyphenated spelling, unless the hyphenated spelling was also sent, in
which case the hyphenated one wins.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

#: The most header bytes the emulator takes in a request, or passes on from a container's
#: answer (werkzeug's server caps one line at 64 KiB; http.client refuses a longer one).
MAX_HEADER_BYTES = 64 * 1024

#: Environ key: the ``HTTP_*`` keys that came from underscored header names. S3 does not share
#: the rule: the pre-signed storage leaves them out of what it checks.
UNDERSCORED = "nvcf_emulator.underscored"


def environ_key(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


def add_headers(environ: MutableMapping[str, Any], headers: Iterable[tuple[str, str]]) -> None:
    """Put request headers into ``environ`` following the rule above (repeats are comma-joined)."""
    pending: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname == "content-type":
            environ["CONTENT_TYPE"] = value
            continue
        if lname == "content-length":
            environ["CONTENT_LENGTH"] = value
            continue
        key = environ_key(name)
        if "_" in name:
            pending[key] = f"{pending[key]},{value}" if key in pending else value
        elif key in environ:
            environ[key] = f"{environ[key]},{value}"
        else:
            environ[key] = value
    added = [key for key in pending if key not in environ]
    for key in added:
        environ[key] = pending[key]
    if added:
        environ[UNDERSCORED] = frozenset(added) | environ.get(UNDERSCORED, frozenset())


def make_environ(
    method: str,
    path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    body: io.RawIOBase | io.BufferedIOBase,
    *,
    host: str,
    server_name: str,
    port: int,
    scheme: str = "http",
) -> dict[str, Any]:
    """The environ a server on ``server_name:port`` builds for a request (PEP 3333), with
    ``headers`` put in by :func:`add_headers`. Built by hand: werkzeug's ``EnvironBuilder``
    costs as much as a trivial container call."""
    uri = path + (f"?{query}" if query else "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method.upper(),
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),  # PEP 3333: bytes as latin-1
        "QUERY_STRING": query,
        "REQUEST_URI": uri,
        "RAW_URI": uri,
        "SERVER_NAME": server_name,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    add_headers(environ, headers)
    return environ
