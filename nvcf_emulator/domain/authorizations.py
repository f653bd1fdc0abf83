"""Authorized parties: the accounts a function's owner lets invoke, list and queue-check it
(``/v2/nvcf/authorizations/functions/{fid}[/versions/{vid}]``), with the rules and texts of
NVIDIA/nvcf's AuthorizedPartiesController, AuthorizedPartiesFacade, AuthorizedPartiesService
and AuthorizedPartiesRequest.

Accounts are kept at two levels, as NVCF keeps them: the *function* level (every version, and
versions made later, inherit them) and the *version* level. A version is shared with an account
named at either level. The wildcard ``*`` (a public function) is NVIDIA's to set; an account's
API refuses it, and a function made public (``add_function(public=True)``) cannot be changed.
The emulator has no OAuth clients: a ``clientId`` (NVCF: "should not be specified anymore") is
refused. The accounts one may name are those the emulator knows: the NCA ids of its API keys
(any, when it takes any key).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .errors import BadRequest, NvcfError

__all__ = ["Conflict", "parties_dto", "party_of", "validate_parties"]

WILDCARD = "*"

INVALID_MAPPING = "Invalid request: Issues with the request payload"
DUPLICATE_ACCOUNTS = "Invalid request: Duplicate authorized accounts specified"
WILDCARD_WITH_OTHERS = (
    "Invalid request: Multiple authz parties or clientId specified with wildcard account"
)


class Conflict(NvcfError):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


def where(function_id: str, version_id: str | None) -> str:
    """How NVCF's messages start: the function, and the version when one is named."""
    if version_id is None:
        return f"Function id '{function_id}'"
    return f"Function id '{function_id}', version '{version_id}'"


def _party(item: object) -> tuple[str, str | None]:
    """AuthorizedPartyDto: a ``ncaId`` that is not blank, and maybe a ``clientId``."""
    if not isinstance(item, dict):
        raise BadRequest("Invalid request: an authorized party is an object {ncaId}")
    nca_id, client_id = item.get("ncaId"), item.get("clientId")
    if not isinstance(nca_id, str) or not nca_id.strip():
        raise BadRequest("Invalid request: authorizedParties[].ncaId must not be blank")
    if client_id is not None and not isinstance(client_id, str):
        raise BadRequest("Invalid request: authorizedParties[].clientId must be a string")
    return nca_id, client_id


def validate_parties(body: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """AuthorizedPartiesRequest's checks of a create body; the parties as (ncaId, clientId)."""
    items = body.get("authorizedParties")
    if not isinstance(items, list) or not items:
        raise BadRequest("Invalid request: authorizedParties must be a list that is not empty")
    parties = [_party(item) for item in items]
    if any(c is not None and not c.strip() for _, c in parties):
        raise BadRequest(INVALID_MAPPING)  # isWhitespace(clientId): "" counts, as in Apache
    clients: dict[str, str] = {}
    for nca_id, client_id in parties:  # one client per account and one account per client
        if client_id and clients.setdefault(client_id, nca_id) != nca_id:
            raise BadRequest(INVALID_MAPPING)
    if len(set(clients.values())) != len(clients):
        raise BadRequest(INVALID_MAPPING)
    if len({nca_id for nca_id, _ in parties}) != len(parties):
        raise BadRequest(DUPLICATE_ACCOUNTS)
    if any(nca_id == WILDCARD for nca_id, _ in parties) and (len(parties) > 1 or parties[0][1]):
        raise BadRequest(WILDCARD_WITH_OTHERS)
    return parties


def party_of(body: Mapping[str, Any]) -> tuple[str, str | None]:
    """PatchAuthorizedPartyRequest: one ``authorizedParty``."""
    item = body.get("authorizedParty")
    if item is None:
        raise BadRequest("Invalid request: authorizedParty must not be null")
    return _party(item)


def check_party(
    nca_id: str, client_id: str | None, owner: str, known: Collection[str] | None
) -> None:
    """The facade's ``validateAuthorizedParty``: not the owner, no client, a known account."""
    if nca_id == owner:
        raise BadRequest(
            f"Invalid request: Authorized party mapped to account '{owner}' is invalid"
        )
    if client_id and client_id.strip():
        raise BadRequest(
            f"Invalid request: client '{client_id}' is not set up with account '{nca_id}' "
            "(the emulator has no OAuth clients: leave clientId out, as NVCF's API asks)"
        )
    if known is not None and nca_id != WILDCARD and nca_id not in known:
        raise BadRequest(
            f"Account with ncaId '{nca_id}' not found (the emulator's accounts are the NCA "
            "ids of its API keys: api_keys / --api-key KEY=NCA_ID)"
        )


def parties_dto(
    function_id: str, nca_id: str, version_id: str | None, accounts: Iterable[str] | None
) -> dict[str, Any]:
    """AuthorizedPartiesByFunctionDto (``authorizedParties`` left out when ``accounts`` is
    ``None``, as after a delete)."""
    dto: dict[str, Any] = {"id": function_id, "ncaId": nca_id}
    if version_id is not None:
        dto["versionId"] = version_id
    if accounts is not None:
        dto["authorizedParties"] = [{"ncaId": a} for a in accounts]
    return dto
