"""SigV4 query-string ("pre-signed") URLs for the asset uploads, made and checked with botocore.

Signing and checking share botocore's own canonicalisation (``S3SigV4QueryAuth``), with the
timestamp taken from the emulator's clock instead of the host's, so that time travel moves both.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from ..domain.clock import Clock, isoformat
from ..domain.errors import StorageError

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


def _sigv4_time(dt: datetime) -> str:
    """``dt`` as X-Amz-Date (``SIGV4_TIMESTAMP``, with the year zero-padded to 4 digits)."""
    return f"{dt.year:04d}{dt:%m%dT%H%M%SZ}"


ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES = 604800  # S3: a pre-signed URL lives at most 7 days
#: What NVCF's control plane signs besides ``host``.
DESCRIPTION_HEADER = "x-amz-meta-nvcf-asset-description"
_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


class _Signer(S3SigV4QueryAuth):
    """botocore's S3 query signer with an explicit timestamp (botocore reads the host clock)."""

    def sign(self, request: AWSRequest, timestamp: str) -> None:
        request.context["timestamp"] = timestamp
        self._modify_request_before_signing(request)  # type: ignore[attr-defined]
        self._inject_signature_to_request(request, self.compute(request))  # type: ignore[attr-defined]

    def compute(self, request: AWSRequest) -> str:
        canonical = self.canonical_request(request)
        return str(self.signature(self.string_to_sign(request, canonical), request))

    def canonical(self, request: AWSRequest) -> tuple[str, str]:
        canonical = self.canonical_request(request)
        return canonical, str(self.string_to_sign(request, canonical))


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """What a PUT to a pre-signed URL carried, as the storage route saw it."""

    method: str
    scheme: str
    host: str
    path: str  # decoded
    query: list[tuple[str, str]]  # decoded pairs, in order
    headers: Mapping[str, str]  # lower-case names


@dataclass(frozen=True, slots=True)
class VerifiedUrl:
    signed_at: float
    expires_at: float
    signed_headers: tuple[str, ...]


class UrlSigner:
    """Makes upload URLs and checks requests made with them."""

    def __init__(
        self,
        clock: Clock,
        *,
        region: str,
        access_key: str = "AKIANVCFEMULATOR0000",
        secret_key: str | None = None,
    ) -> None:
        self.clock = clock
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self._credentials = Credentials(access_key, self.secret_key)

    def _signer(self, region: str, expires: int) -> _Signer:
        return _Signer(self._credentials, "s3", region, expires=expires)

    def presign_put(self, url: str, headers: Mapping[str, str], expires: int) -> str:
        """A pre-signed PUT URL for ``url`` that signs ``host`` and ``headers``."""
        request = AWSRequest(method="PUT", url=url, headers=dict(headers))
        timestamp = _sigv4_time(datetime.fromtimestamp(self.clock.now(), tz=UTC))
        self._signer(self.region, expires).sign(request, timestamp)
        return str(request.url)

    def verify(
        self, req: PresignedRequest, expected: Mapping[str, str] | None = None
    ) -> VerifiedUrl:
        """Check a request against its URL's signature, as S3 would.

        Order: the query parameters, the access key, the time window, then the signature over
        the headers the client sent. When that fails but the signature holds over ``expected``
        (the header values the asset was created with), the client sent a wrong or missing
        header: :class:`HeaderMismatch` names it. Any other failure is ``SignatureDoesNotMatch``.
        """
        try:
            parsed_host = urlsplit(f"//{req.host}")
            _ = parsed_host.port
            if not parsed_host.hostname:
                raise ValueError(req.host)
        except ValueError:
            raise StorageError(
                400, "InvalidArgument", f"The Host header '{req.host}' is not valid"
            ) from None
        params = dict(req.query)
        missing = [p for p in _REQUIRED if p not in params]
        if len(missing) == len(_REQUIRED):
            raise StorageError(403, "AccessDenied", "Access Denied")
        if missing:
            raise _query_error(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, "
                "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and "
                "X-Amz-Expires parameters."
            )
        if params["X-Amz-Algorithm"] != ALGORITHM:
            raise _query_error(
                f'X-Amz-Algorithm only supports "{ALGORITHM}"',
            )
        cred = params["X-Amz-Credential"].split("/")
        if len(cred) != 5 or cred[3] != "s3" or cred[4] != "aws4_request":
            raise _query_error(
                "Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; "
                'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
            )
        access_key, date, region = cred[0], cred[1], cred[2]
        if not hmac.compare_digest(access_key.encode(), self.access_key.encode()):
            raise StorageError(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=access_key,
            )
        if region != self.region:
            raise _query_error(
                f"Error parsing the X-Amz-Credential parameter; the region '{region}' is wrong; "
                f"expecting '{self.region}'"
            )
        try:
            signed_dt = datetime.strptime(params["X-Amz-Date"], SIGV4_TIMESTAMP).replace(tzinfo=UTC)
        except ValueError:
            raise _query_error(
                "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
            ) from None
        if date != params["X-Amz-Date"][:8]:
            raise _query_error(
                f"Error parsing the X-Amz-Credential parameter; incorrect date. "
                f'This date in the credential must be in the format "yyyyMMdd" and match '
                f"X-Amz-Date ({params['X-Amz-Date'][:8]})."
            )
        try:
            expires = int(params["X-Amz-Expires"])
        except ValueError:
            raise _query_error("X-Amz-Expires should be a number") from None
        if expires < 0:
            raise _query_error("X-Amz-Expires must be non-negative")
        if expires > MAX_EXPIRES:
            raise _query_error(
                f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_EXPIRES}"
            )
        now = self.clock.now()
        signed_at = signed_dt.timestamp()
        if now > signed_at + expires:
            raise StorageError(
                403,
                "AccessDenied",
                "Request has expired",
                **{"X-Amz-Expires": expires},
                Expires=isoformat(signed_at + expires, millis=False),
                ServerTime=isoformat(now, millis=False),
            )
        if signed_at > now + 900:  # S3 allows 15 minutes of clock skew
            raise StorageError(
                403,
                "AccessDenied",
                "Request is not yet valid",  # S3's words (MinIO's are "not valid yet")
                **{"X-Amz-Date": params["X-Amz-Date"]},
                Expires=isoformat(signed_at + expires, millis=False),
                ServerTime=isoformat(now, millis=False),
            )
        signed_names = tuple(params["X-Amz-SignedHeaders"].split(";"))
        query = [(k, v) for k, v in req.query if k != "X-Amz-Signature"]
        signer = self._signer(region, expires)
        provided = params["X-Amz-Signature"]

        def attempt(values: Mapping[str, str]) -> tuple[bool, AWSRequest]:
            request = AWSRequest(
                method=req.method,
                url=f"{req.scheme}://{req.host}{quote(req.path, safe='/~')}",
                headers={name: values[name] for name in signed_names if name in values},
            )
            request.params = query  # type: ignore[assignment]
            request.context["timestamp"] = params["X-Amz-Date"]
            ok = hmac.compare_digest(signer.compute(request).encode(), provided.encode())
            return ok, request

        sent = {name: req.headers[name] for name in signed_names if name in req.headers}
        sent["host"] = req.host
        ok, request = attempt(sent)
        if ok and len(sent) == len(signed_names):
            return VerifiedUrl(signed_at, signed_at + expires, signed_names)
        if expected is not None:
            wanted = {**dict(expected), "host": req.host}
            if attempt(wanted)[0]:
                raise HeaderMismatch(
                    [
                        (name, wanted[name], req.headers.get(name))
                        for name in signed_names
                        if name != "host" and req.headers.get(name) != wanted.get(name)
                    ]
                )
        canonical, string_to_sign = signer.canonical(request)
        raise StorageError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            AWSAccessKeyId=access_key,
            StringToSign=string_to_sign,
            SignatureProvided=provided,
            CanonicalRequest=canonical,
        )


class HeaderMismatch(Exception):
    """The URL is genuine, but a signed header differs from what the asset was created with."""

    def __init__(self, mismatches: list[tuple[str, str, str | None]]) -> None:
        self.mismatches = mismatches
        parts = []
        for name, expected, sent in mismatches:
            label = "Content-Type" if name == "content-type" else name
            if sent is None:
                parts.append(f"the {label} header is missing: expected '{expected}'")
            else:
                parts.append(f"the {label} header is '{sent}' but the asset expects '{expected}'")
        super().__init__("; ".join(parts))


def decode_query(raw: str) -> list[tuple[str, str]]:
    """Split a raw query string into decoded pairs (``+`` stays ``+``, as S3 reads SigV4 URLs)."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key), unquote(value)))
    return pairs


def new_request_id() -> str:
    return secrets.token_hex(8).upper()


def _query_error(message: str) -> StorageError:
    return StorageError(400, "AuthorizationQueryParametersError", message)
