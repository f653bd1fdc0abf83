"""One rule for header names with underscores, used by in-process and server mode alike.

werkzeug's development server drops every header whose name contains ``_`` (CGI cannot tell
``A_B`` from ``A-B``), while a WSGI environ built in-process would keep them. Some NVCF clients
(ngcsdk) send ``NVCF-POLL_SECONDS``. The emulator's rule, in both modes: a header spelled with
underscores counts as its hyphenated spelling, unless the hyphenated spelling was also sent, in
which case the hyphenated one wins.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any


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
    for key, value in pending.items():
        environ.setdefault(key, value)
