"""Errors the domain raises. The HTTP layer turns them into NVCF problem JSON or S3 XML."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus


class NvcfError(Exception):
    """An NVCF control-plane error: rendered as RFC 7807 problem JSON."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.headers = dict(headers or {})


class BadRequest(NvcfError, ValueError):
    """Bad input: a 400 over HTTP, and a ValueError to Python callers (``add_function``)."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


class Unauthorized(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(401, detail)


class Forbidden(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


class NotFound(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(404, detail)


class PayloadTooLarge(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class StorageError(Exception):
    """An S3 error on the pre-signed storage endpoint: rendered as S3's XML error document."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        **fields: str | int,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


class MessageKeyError(KeyError):
    """A ``KeyError`` whose message reads as a sentence (``KeyError`` itself shows it quoted,
    as a repr): the base of the Python API's "no such thing" errors."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
