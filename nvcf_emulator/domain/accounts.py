"""API keys and the NVIDIA Cloud Accounts (NCA ids) they resolve to."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Unauthorized

#: One token, no whitespace inside (RFC 6750 §2.1).
_BEARER_TOKEN = re.compile(r"\S+")

API_KEY_PREFIX = "nvapi-"
DEFAULT_NCA_ID = "nvcf-emulator-nca"
DEFAULT_API_KEY = "nvapi-nvcf-emulator-test-key"


@dataclass(frozen=True, slots=True)
class Account:
    """A caller: the NCA id its credential resolves to. Every asset and request belongs to one."""

    nca_id: str


class Accounts:
    """Resolves ``Authorization: Bearer <key>`` to an :class:`Account`.

    With no keys configured, any ``nvapi-`` key is accepted and maps to one default account.
    With keys configured (``{key: nca_id}``), only those keys are accepted; the comparison runs
    over every configured key in constant time, so timing does not reveal a partial match.
    """

    def __init__(
        self, keys: Mapping[str, str] | None = None, *, default_nca_id: str = DEFAULT_NCA_ID
    ) -> None:
        self._keys = [(k.encode(), Account(v)) for k, v in (keys or {}).items()]
        self._default = Account(default_nca_id)

    @property
    def open(self) -> bool:
        """True when any ``nvapi-`` key is accepted."""
        return not self._keys

    def authenticate(self, authorization: str | None) -> Account:
        if not authorization:
            raise Unauthorized("Authorization header is missing")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not _BEARER_TOKEN.fullmatch(token):
            # RFC 6750 §2.1: one token68, no spaces ("Bearer nvapi-x junk" is malformed).
            raise Unauthorized("Authorization header must be 'Bearer <API key>'")
        if self.open:
            if token.startswith(API_KEY_PREFIX) and len(token) > len(API_KEY_PREFIX):
                return self._default
            raise Unauthorized(f"Invalid API key: keys start with '{API_KEY_PREFIX}'")
        presented = token.encode("utf-8", "surrogateescape")
        found: Account | None = None
        for key, account in self._keys:
            if hmac.compare_digest(key, presented):
                found = account
        if found is None:
            raise Unauthorized("Invalid API key")
        return found

    def any_key_for(self, nca_id: str | None = None) -> str:
        """A key that authenticates as ``nca_id`` (or as the default account)."""
        if self.open:
            return DEFAULT_API_KEY
        for key, account in self._keys:
            if nca_id is None or account.nca_id == nca_id:
                return key.decode()
        raise KeyError(nca_id)
