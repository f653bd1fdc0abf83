"""API keys and the NVIDIA Cloud Accounts (NCA ids) they resolve to."""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import Unauthorized

#: ``Authorization: Bearer <token>`` as NVCF's control plane reads it (Spring Security's
#: ``DefaultBearerTokenResolver``): the scheme in any case, one space, a token68 (RFC 6750
#: §2.1). Anything else that starts with "bearer" is a malformed token (two spaces, a tab, a
#: second word, a byte that is not ASCII).
_BEARER = re.compile(r"bearer (?P<token>[A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE | re.ASCII)
#: Optional whitespace around a field value is not part of it (RFC 9110 §5.5): SP and HTAB
#: only, not every Unicode space ``str.strip`` would take (NBSP, NEL).
_OWS = " \t"

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
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("Authorization header must be 'Bearer <API key>'")
        if self.open:
            if token.startswith(API_KEY_PREFIX) and len(token) > len(API_KEY_PREFIX):
                return self._default
            raise Unauthorized(f"Invalid API key: keys start with '{API_KEY_PREFIX}'")
        presented = token.encode()  # ASCII: the pattern allows nothing else
        found: Account | None = None
        for key, account in self._keys:
            if hmac.compare_digest(key, presented):
                found = account
        if found is None:
            raise Unauthorized("Invalid API key")
        return found

    def __repr__(self) -> str:
        if self.open:
            return f"<Accounts open: any {API_KEY_PREFIX} key is {self._default.nca_id!r}>"
        return f"<Accounts {len(self._keys)} key(s): {sorted({a.nca_id for _, a in self._keys})}>"

    def nca_ids(self) -> frozenset[str] | None:
        """The accounts this emulator knows: its keys' NCA ids; ``None`` when it is open (any
        key is the default account, and any other NCA id may be named)."""
        if self.open:
            return None
        return frozenset({self._default.nca_id, *(a.nca_id for _, a in self._keys)})

    def any_key_for(self, nca_id: str | None = None) -> str:
        """A key that authenticates as ``nca_id`` (or as the default account)."""
        if self.open:
            return DEFAULT_API_KEY
        for key, account in self._keys:
            if nca_id is None or account.nca_id == nca_id:
                return key.decode()
        raise KeyError(nca_id)


def bearer_token(authorization: str | None) -> str | None:
    """The token of a well-formed ``Authorization: Bearer <token>``, else ``None``."""
    bearer = _BEARER.fullmatch((authorization or "").strip(_OWS))
    return None if bearer is None else bearer["token"]


def token_matches(authorization: str | None, expected: str) -> bool:
    """``authorization`` is ``Bearer <expected>`` (the admin token's rule): the scheme in any
    case, then the token with optional whitespace (SP, HTAB; not every Unicode space) around
    it, compared in constant time. Looser than an API key's token68: an admin token may be
    any visible ASCII, inner spaces included."""
    scheme, _, given = (authorization or "").strip(_OWS).partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip(_OWS).encode(), expected.encode()
    )


def is_bearer_token(value: str) -> bool:
    """``value`` can be sent as ``Authorization: Bearer <value>`` (a token68)."""
    return _BEARER.fullmatch(f"Bearer {value}") is not None


def offers_bearer(authorization: str | None) -> bool:
    """The header is an attempt at a bearer token (Spring's resolver: it starts with "bearer",
    in any case); a 401 for it says ``error="invalid_token"``, else it names the scheme only."""
    return (authorization or "").strip(_OWS)[:6].lower() == "bearer"
