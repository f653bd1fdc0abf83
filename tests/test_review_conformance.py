"""Conformance review: how NVIDIA's open-source NVCF (repo NVIDIA/nvcf) answers, where the other
suites do not pin it. Each test names the NVIDIA/nvcf file (and function) it follows.

Paths below are shortened:
- ``INV`` = src/invocation-plane-services/http-invocation/crates/server (Rust, axum 0.8,
  tower-http 0.6): the service behind ``/v2/nvcf/pexec/...``.
- ``CORE`` = src/control-plane-services/cloud-functions/nvcf-core/src/main/java/com/nvidia/nvcf
  (Java, Spring MVC + Spring Security resource server): assets and function management.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest
import requests

from nvcf_emulator.worker import ContainerRequest

from .conftest import Api

ASSET_BODY = {"contentType": "image/png", "description": "red-cat-photo"}
PREFLIGHT = {
    "Origin": "http://localhost",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def invoke(api: Api, fid: str, **headers: str) -> requests.Response:
    return requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid}",
        headers={**api.headers, **headers},
        json={"prompt": "hi"},
        timeout=30,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- control plane: assets ----------------------------------------------------------------------


def test_asset_id_that_is_not_a_uuid_is_400(api: Api) -> None:
    """CORE/rest/asset/AssetController.java getAsset/deleteAsset take
    ``@PathVariable("assetId") UUID assetId``: a value that is not a UUID fails Spring's type
    conversion (MethodArgumentTypeMismatchException), which ResponseEntityExceptionHandler (via
    ValidationAwareExceptionHandler) answers 400 problem JSON, before the asset is looked up."""
    for method in ("GET", "DELETE"):
        r = requests.request(
            method, f"{api.base_url}/v2/nvcf/assets/not-a-uuid", headers=api.headers, timeout=10
        )
        assert r.status_code == 400, (method, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["status"] == 400


def test_asset_ids_are_read_case_insensitively(api: Api) -> None:
    """CORE/rest/asset/AssetManagementFacade.java getAsset/deleteAsset build the S3 key as
    ``ncaId + "/" + assetId`` from the ``java.util.UUID`` that Spring parsed (UUID.fromString
    accepts upper case; UUID.toString is lower case): an upper-case id names the same asset."""
    asset = api.new_asset(b"cat")
    aid = asset["assetId"]
    r = requests.get(f"{api.base_url}/v2/nvcf/assets/{aid.upper()}", headers=api.headers)
    assert r.status_code == 200, r.text
    assert r.json()["asset"]["assetId"] == aid
    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid.upper()}", headers=api.headers)
    assert r.status_code == 204, r.text
    assert (
        requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers).status_code == 404
    )


@pytest.mark.parametrize("content_type", [None, "application/vnd.api+json"])
def test_create_asset_needs_exactly_application_json(api: Api, content_type: str | None) -> None:
    """CORE/rest/asset/AssetController.java createAsset is
    ``@PostMapping(value = "/v2/nvcf/assets", consumes = APPLICATION_JSON_VALUE)``. Spring MVC's
    ConsumesRequestCondition takes a body without Content-Type as application/octet-stream and
    matches with MediaType.includes, so neither that nor another ``+json`` type matches:
    415 (HttpMediaTypeNotSupportedException)."""
    headers = dict(api.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets", headers=headers, data=json.dumps(ASSET_BODY).encode()
    )
    assert r.status_code == 415, r.text
    assert api.emulator.assets.all() == []


@pytest.mark.parametrize("description", ["", " ", "d" * 3000])
def test_create_asset_only_requires_description_to_be_present(api: Api, description: str) -> None:
    """CORE/rest/asset/dto/CreateAssetRequest.java: ``description`` is ``@NonNull @NotNull``
    and nothing else (no @NotBlank, no @Size); AssetManagementFacade.createAsset passes it to
    S3PreSignedUrlGenerator.uploadUrl as metadata unchecked (only contentType is checked there).
    So an empty, blank or long description still gets 200 and is echoed back."""
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers=api.headers,
        json={"contentType": "image/png", "description": description},
    )
    assert r.status_code == 200, r.text
    assert r.json()["description"] == description


@pytest.mark.parametrize("description", ["", "a  b", "cat"])
def test_any_description_uploads_when_sent_back_as_given(api: Api, description: str) -> None:
    """An empty description, or one with inner runs of spaces, is signed as S3 reads headers
    (SigV4 trims and squeezes spaces), so sending it back unchanged uploads the asset."""
    asset = api.create_asset(description=description)
    r = api.upload(asset, b"bytes")
    assert r.status_code == 200, r.text
    assert api.emulator.asset_bytes(asset["assetId"]) == b"bytes"


def test_a_description_too_long_for_s3_metadata_fails_at_the_upload(api: Api) -> None:
    """S3 caps user metadata (the UTF-8 bytes of each ``x-amz-meta-*`` key and value) at
    2 KB: NVCF creates the asset, and the upload is S3's 400 ``MetadataTooLarge``; the asset
    stays not uploaded (GET is 404)."""
    asset = api.create_asset(description="d" * 2100)
    r = api.upload(asset, b"bytes")
    assert r.status_code == 400, r.text
    assert "<Code>MetadataTooLarge</Code>" in r.text
    assert "<MaxSizeAllowed>2048</MaxSizeAllowed>" in r.text
    assert f"<Size>{len('nvcf-asset-description') + 2100}</Size>" in r.text
    got = requests.get(f"{api.base_url}/v2/nvcf/assets/{asset['assetId']}", headers=api.headers)
    assert got.status_code == 404
    fits = api.create_asset(description="d" * (2048 - len("nvcf-asset-description")))
    assert api.upload(fits, b"ok").status_code == 200


def test_odd_descriptions_are_kept_as_given(api: Api) -> None:
    """Control characters and non-Latin text are created, listed and read back as sent; a
    lone surrogate (a valid JSON escape, but no text a header can carry) is a 400 that says so,
    never a 500."""
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers={**api.headers, "Content-Type": "application/json"},
        data='{"contentType": "image/png", "description": "\\ud800"}',
    )
    assert r.status_code == 400, r.text
    assert "lone surrogate" in r.json()["detail"]
    for description in ("line\nbreak", "猫の写真"):
        r = requests.post(
            f"{api.base_url}/v2/nvcf/assets",
            headers={**api.headers, "Content-Type": "application/json"},
            data=json.dumps({"contentType": "image/png", "description": description}),
        )
        assert r.status_code == 200, r.text
        assert r.json()["description"] == description
    listed = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert listed.status_code == 200


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        ("*/*", 200),
        ("application/*", 200),
        ("application/json", 200),
        ("text/html, application/json;q=0.1", 200),
        ("text/html", 406),
        ("application/xml", 406),
    ],
)
def test_control_plane_answers_only_an_accept_that_admits_json(
    api: Api, accept: str | None, status: int
) -> None:
    """CORE/rest/asset/AssetController.java, FunctionManagementController.java:
    ``@RequestMapping(produces = APPLICATION_JSON_VALUE)``: Spring MVC's produces condition
    fails for an Accept that admits no application/json, which ResponseEntityExceptionHandler
    answers 406 (HttpMediaTypeNotAcceptableException). The invocation service has no such
    rule: pexec answers whatever Accept says."""
    headers = dict(api.headers)
    if accept is not None:
        headers["Accept"] = accept
    for path in ("/v2/nvcf/assets", "/v2/nvcf/functions"):
        r = requests.get(f"{api.base_url}{path}", headers=headers, timeout=10)
        assert r.status_code == status, (path, r.text)
    fid, _ = api.emulator.add_function(lambda req: {"ok": True}, name="any-accept")
    r = invoke(api, fid, Accept=accept or "*/*")
    assert r.status_code == 200


def test_a_bad_content_type_is_415_before_a_bad_accept_is_406(api: Api) -> None:
    """Spring matches ``consumes`` before ``produces`` (RequestMappingInfo), both after the
    security filter: a POST with neither right is 415; with a good key only."""
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers={**api.headers, "Accept": "text/html", "Content-Type": "text/plain"},
        data=json.dumps(ASSET_BODY),
        timeout=10,
    )
    assert r.status_code == 415, r.text
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers={"Accept": "text/html", "Content-Type": "text/plain"},
        data=json.dumps(ASSET_BODY),
        timeout=10,
    )
    assert r.status_code == 401


def test_control_plane_401_carries_www_authenticate_bearer(api: Api) -> None:
    """CORE/configuration/SecurityConfiguration.java: ``oauth2ResourceServer`` with
    ``anyRequest().authenticated()`` and no custom entry point, so Spring Security's
    BearerTokenAuthenticationEntryPoint answers a request without a token: 401 with
    ``WWW-Authenticate: Bearer`` (RFC 6750 §3), for assets and function management alike."""
    for path in ("/v2/nvcf/assets", "/v2/nvcf/functions"):
        r = requests.get(f"{api.base_url}{path}", timeout=10)
        assert r.status_code == 401
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), (path, r.headers)


# -- control plane: function management ---------------------------------------------------------


def test_function_ids_that_are_not_uuids_are_400_on_management_routes(api: Api) -> None:
    """CORE/rest/function/management/FunctionManagementController.java: every
    ``{functionId}`` / ``{functionVersionId}`` is ``@PathVariable UUID``; a value that is not a
    UUID is Spring's MethodArgumentTypeMismatchException: 400 problem JSON, not 404."""
    fid, _ = api.emulator.add_function(lambda req: {}, name="ids")
    base = f"{api.base_url}/v2/nvcf/functions"
    for method, url in (
        ("GET", f"{base}/not-a-uuid/versions"),
        ("GET", f"{base}/{fid}/versions/not-a-uuid"),
        ("DELETE", f"{base}/{fid}/versions/not-a-uuid"),
    ):
        r = requests.request(method, url, headers=api.headers, timeout=10)
        assert r.status_code == 400, (method, url, r.status_code, r.text)
        assert r.headers["Content-Type"] == "application/problem+json"


def test_function_management_reads_ids_case_insensitively(api: Api) -> None:
    """CORE/rest/function/management/FunctionManagementController.java getFunctionVersion takes
    ``UUID functionId`` / ``UUID functionVersionId`` (UUID.fromString accepts upper case), so an
    upper-case id finds the same version; the DTO carries the canonical lower-case ids."""
    fid, vid = api.emulator.add_function(lambda req: {}, name="upper")
    r = requests.get(
        f"{api.base_url}/v2/nvcf/functions/{fid.upper()}/versions/{vid.upper()}",
        headers=api.headers,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["function"]["id"], r.json()["function"]["versionId"]) == (fid, vid)


def test_create_function_without_content_type_is_415(api: Api) -> None:
    """CORE/rest/function/management/FunctionManagementController.java createFunction is
    ``@PostMapping(value = "/v2/nvcf/functions", consumes = APPLICATION_JSON_VALUE)``: a body
    with no Content-Type counts as application/octet-stream in Spring MVC, so 415."""
    body = {"name": "no-ctype", "inferenceUrl": "/infer", "containerImage": "nvcr.io/o/i:1"}
    r = requests.post(
        f"{api.base_url}/v2/nvcf/functions", headers=api.headers, data=json.dumps(body).encode()
    )
    assert r.status_code == 415, r.text


# -- invocation service ---------------------------------------------------------------------------


def test_invoke_with_ids_that_are_not_uuids_is_400_plain_text(api: Api) -> None:
    """INV/src/routes/post_pexec.rs ``pexec`` extracts ``Path<FunctionRouting>`` whose
    ``function_id`` / ``function_version_id`` are ``Uuid``: axum's Path rejection
    (FailedToDeserializePathParams) is 400 with a text/plain body, before the function is
    looked up (an unknown but well-formed id is the 404 from auth_invocation)."""
    fid, _ = api.emulator.add_function(lambda req: {}, name="paths")
    for path in ("functions/not-a-uuid", f"functions/{fid}/versions/not-a-uuid"):
        r = requests.post(
            f"{api.base_url}/v2/nvcf/pexec/{path}", headers=api.headers, json={}, timeout=10
        )
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    assert api.emulator.invocations == []


def test_invoke_reads_function_id_case_insensitively(api: Api) -> None:
    """INV/src/routes/post_pexec.rs: ``FunctionRouting.function_id`` is a ``Uuid`` (uuid's
    parser accepts upper-case hex) and is passed as such to ``auth_invocation``: an upper-case
    function or version id invokes the same function."""
    fid, vid = api.emulator.add_function(lambda req: {"ok": True}, name="upper")
    r = invoke(api, fid.upper())
    assert (r.status_code, r.json()) == (200, {"ok": True}), r.text
    r = requests.post(
        f"{api.base_url}/v2/nvcf/pexec/functions/{fid.upper()}/versions/{vid.upper()}",
        headers=api.headers,
        json={},
    )
    assert r.status_code == 200, r.text


def test_status_with_request_id_not_a_uuid_is_400_plain_text(api: Api) -> None:
    """INV/src/routes/get_pexec.rs ``pexec_status_route`` extracts ``Path<StatusPath>`` with
    ``request_id: Uuid``: a malformed id is axum's 400 text/plain Path rejection, not the 404
    problem JSON of an unknown (well-formed) id."""
    r = requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/not-a-uuid", headers=api.headers, timeout=10
    )
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers


@pytest.mark.nvcf(always_async=True)
def test_status_reads_request_id_case_insensitively(api: Api) -> None:
    """INV/src/routes/get_pexec.rs: the path's ``request_id`` is parsed as a ``Uuid`` and the
    record is found by ``RequestId`` (printed lower case), so polling with the upper-case form
    of ``NVCF-REQID`` reaches the same request."""
    fid, _ = api.emulator.add_function(lambda req: {"done": 1}, name="upper-poll")
    r = invoke(api, fid)
    assert r.status_code == 202
    req_id = r.headers["NVCF-REQID"]
    wait_for(lambda: api.emulator.invocations[-1].done)
    got = requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/{req_id.upper()}",
        headers={**api.headers, "NVCF-POLL-SECONDS": "5"},
        timeout=30,
    )
    assert (got.status_code, got.headers.get("NVCF-REQID")) == (200, req_id), got.text


def test_poll_header_is_checked_before_the_request_id_is_looked_up(api: Api) -> None:
    """INV/src/routes/get_pexec.rs ``pexec_status``: ``poll_duration`` runs before
    ``get_request_mapping``, so a bad NVCF-POLL-SECONDS on an unknown request id is 400, not
    404. (On the POST it is the other way round: ``auth_invocation`` runs first, see
    INV/src/routes/post_pexec.rs, so an unknown function with a bad header is 404.)"""
    unknown = str(uuid.uuid4())
    r = requests.get(
        f"{api.base_url}/v2/nvcf/pexec/status/{unknown}",
        headers={**api.headers, "NVCF-POLL-SECONDS": "abc"},
        timeout=10,
    )
    assert r.status_code == 400
    r = invoke(api, unknown, **{"NVCF-POLL-SECONDS": "abc"})
    assert r.status_code == 404


def test_cors_preflight_is_200_with_credentials_and_max_age(api: Api) -> None:
    """INV/src/app.rs: ``CorsLayer::very_permissive().max_age(86400s)`` on the path router;
    INV/tests/test_cors.rs (test_pexec_cors, test_pexec_version_id_cors,
    test_pexec_status_cors) expects 200, ``Access-Control-Allow-Credentials: true``,
    ``Vary: origin, access-control-request-method, access-control-request-headers``,
    ``Access-Control-Max-Age: 86400`` and ``Allow: POST`` (``GET,HEAD`` on the status path)."""
    fid, vid = api.emulator.add_function(lambda req: {}, name="cors")
    cases = (
        (f"functions/{fid}", "POST", "POST"),
        (f"functions/{fid}/versions/{vid}", "POST", "POST"),
        (f"status/{uuid.uuid4()}", "GET", "GET,HEAD"),
    )
    for path, method, allow in cases:
        r = requests.options(
            f"{api.base_url}/v2/nvcf/pexec/{path}",
            headers={**PREFLIGHT, "Access-Control-Request-Method": method},
            timeout=10,
        )
        assert r.status_code == 200, (path, r.status_code)
        assert r.headers.get("Access-Control-Allow-Credentials") == "true", r.headers
        assert r.headers.get("Access-Control-Max-Age") == "86400", r.headers
        assert r.headers.get("Vary") == (
            "origin, access-control-request-method, access-control-request-headers"
        )
        assert r.headers.get("Allow") == allow, r.headers
        assert r.headers["Access-Control-Allow-Origin"] == "http://localhost"


def test_cors_headers_on_an_invocation_that_has_an_origin(api: Api) -> None:
    """INV/src/app.rs: the same ``CorsLayer::very_permissive()`` wraps the actual request too;
    tower-http then mirrors the request's Origin in ``Access-Control-Allow-Origin`` and adds
    ``Access-Control-Allow-Credentials: true`` (a browser needs both to read the answer), next
    to the ``Access-Control-Expose-Headers: nvcf-reqid`` of post_pexec.rs
    handle_streaming_response."""
    fid, _ = api.emulator.add_function(lambda req: {"ok": True}, name="cors-post")
    r = invoke(api, fid, Origin="https://app.example")
    assert r.status_code == 200
    assert r.headers.get("Access-Control-Allow-Origin") == "https://app.example", r.headers
    assert r.headers.get("Access-Control-Allow-Credentials") == "true", r.headers
    assert "nvcf-reqid" in r.headers["Access-Control-Expose-Headers"]


def test_wrong_method_on_an_invocation_route(api: Api) -> None:
    """INV/src/app.rs: ``.layer(auth_middleware)`` wraps each route's MethodRouter, its 405
    fallback included, so a wrong method without Authorization is the auth middleware's 401
    (text/plain ``Header of type `authorization` was missing``, INV/src/middleware/auth.rs);
    with it, axum's own 405: empty body and ``Allow: POST`` (as test_cors.rs sees it)."""
    fid, _ = api.emulator.add_function(lambda req: {}, name="methods")
    url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"
    r = requests.get(url, timeout=10)
    assert (r.status_code, r.text) == (401, "Header of type `authorization` was missing")
    r = requests.get(url, headers=api.headers, timeout=10)
    assert r.status_code == 405
    assert r.headers.get("Allow") == "POST", r.headers
    assert r.content == b""


def test_an_empty_asset_references_header_is_no_assets(api: Api) -> None:
    """INV/tests/test_assets.rs test_empty_input_asset ("a customer is currently sending us
    headers like this"): ``NVCF-INPUT-ASSET-REFERENCES:`` with an empty value is 200, the
    same as no header (INV/src/routes/input_asset_header.rs skips empty items)."""
    seen: list[str | None] = []

    def container(req: ContainerRequest) -> dict[str, bool]:
        seen.append(req.header("NVCF-FUNCTION-ASSET-IDS"))
        return {"ok": True}

    fid, _ = api.emulator.add_function(container, name="empty-refs")
    r = invoke(api, fid, **{"NVCF-INPUT-ASSET-REFERENCES": ""})
    assert (r.status_code, r.json()) == (200, {"ok": True}), r.text
    assert seen == [None]
