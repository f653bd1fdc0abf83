"""The asset API: create, list, get, delete; validation; auth; account isolation."""

from __future__ import annotations

import uuid

import pytest
import requests

from .conftest import Api


def test_create_returns_exactly_200_with_the_four_fields(api: Api) -> None:
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers=api.headers,
        json={"contentType": "image/png", "description": "red-cat-photo"},
    )
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"assetId", "uploadUrl", "contentType", "description"}
    assert uuid.UUID(body["assetId"]).version == 4
    assert body["contentType"] == "image/png"
    assert body["description"] == "red-cat-photo"
    assert "X-Amz-Signature=" in body["uploadUrl"]


def test_upload_url_is_sigv4_query_signed_for_an_hour(api: Api) -> None:
    url = api.create_asset()["uploadUrl"]
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Expires=3600" in url
    assert "X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-meta-nvcf-asset-description" in url
    assert "%25" not in url


def test_unknown_extra_fields_are_ignored(api: Api) -> None:
    r = requests.post(
        f"{api.base_url}/v2/nvcf/assets",
        headers=api.headers,
        json={"contentType": "image/png", "description": "d", "colour": "red"},
    )
    assert r.status_code == 200
    assert "colour" not in r.json()


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ({"description": "d"}, "contentType", "contentType is required"),
        ({"contentType": "image/png"}, "description", "description is required"),
        ({"contentType": "", "description": "d"}, "contentType", "must not be empty"),
        ({"contentType": 5, "description": "d"}, "contentType", "must be a string, got int"),
        ({"contentType": "image/png", "description": ["x"]}, "description", "got list"),
        ({"contentType": "png", "description": "d"}, "contentType", "type/subtype"),
    ],
)
def test_invalid_fields_are_400_naming_the_field(
    api: Api, body: dict[str, object], field: str, fragment: str
) -> None:
    r = requests.post(f"{api.base_url}/v2/nvcf/assets", headers=api.headers, json=body)
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 400
    assert problem["title"] == "Bad Request"
    assert field in problem["detail"]
    assert fragment in problem["detail"]
    assert api.emulator.stored_assets() == []


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body is missing"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    ],
)
def test_malformed_json_is_400(api: Api, data: bytes, fragment: str) -> None:
    headers = {**api.headers, "Content-Type": "application/json"}
    r = requests.post(f"{api.base_url}/v2/nvcf/assets", headers=headers, data=data)
    assert r.status_code == 400
    assert fragment in r.json()["detail"]
    assert api.emulator.stored_assets() == []


def test_non_json_content_type_is_415(api: Api) -> None:
    headers = {**api.headers, "Content-Type": "text/plain"}
    r = requests.post(f"{api.base_url}/v2/nvcf/assets", headers=headers, data=b"{}")
    assert r.status_code == 415
    assert "text/plain" in r.json()["detail"]


def test_list_get_delete(api: Api) -> None:
    asset = api.new_asset(b"cat")
    aid = asset["assetId"]
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert r.status_code == 200
    assert r.json() == {
        "assets": [{"assetId": aid, "contentType": "image/png", "description": "red-cat-photo"}]
    }
    r = requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers)
    assert r.status_code == 200
    details = r.json()["asset"]
    assert details["assetId"] == aid
    assert details["contentType"] == "image/png"
    assert details["description"] == "red-cat-photo"
    assert details["createdAt"].endswith("Z")
    key = api.key_of(aid)
    assert api.bytes_at(key) == b"cat"

    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers)
    assert r.status_code == 204
    assert r.content == b""
    assert api.bytes_at(key) is None
    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).json() == {
        "assets": []
    }
    r = requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers)
    assert r.status_code == 404


def test_asset_exists_only_once_uploaded(api: Api) -> None:
    asset = api.create_asset()
    aid = asset["assetId"]
    assert (
        requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers).status_code == 404
    )
    listed = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers).json()
    assert listed == {"assets": []}
    assert (
        requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers).status_code
        == 404
    )
    assert api.upload(asset).status_code == 200
    assert (
        requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=api.headers).status_code == 200
    )


@pytest.mark.parametrize(
    ("asset_id", "status"),
    [
        ("00000000-0000-4000-8000-000000000000", 404),  # well-formed, unknown
        ("..%2F..%2Fetc%2Fpasswd", 404),  # a path of its own: no such route
        ("not-a-uuid", 400),  # NVCF's control plane reads the id as a UUID first
        ("%00", 400),
        ("x" * 10000, 400),
    ],
)
def test_unknown_or_malformed_ids_are_404_or_400_problem_json(
    api: Api, asset_id: str, status: int
) -> None:
    for method in ("GET", "DELETE"):
        r = requests.request(
            method, f"{api.base_url}/v2/nvcf/assets/{asset_id}", headers=api.headers
        )
        assert r.status_code == status
        assert r.headers["Content-Type"] == "application/problem+json"
        if status == 400:
            assert r.json()["detail"].startswith("Failed to convert 'assetId' with value: ")
            assert len(r.json()["detail"]) < 400  # a long id is cut short in the message


def test_listing_returns_at_most_1000_ids_in_ascending_id_order(api: Api) -> None:
    emu = api.emulator
    account = emu.accounts.authenticate(f"Bearer {emu.api_key}")
    # 1005 uploaded assets, made through the domain to keep the test fast.
    ids = []
    for _ in range(1005):
        asset = emu.assets.create(account, "text/plain", "d")
        emu.assets.upload(asset.nca_id, asset.asset_id, _Reader(b"x"), 1)
        ids.append(asset.asset_id)
    r = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert r.status_code == 200
    listed = [a["assetId"] for a in r.json()["assets"]]
    assert len(listed) == 1000
    assert listed == sorted(ids)[:1000]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, size: int = -1) -> bytes:
        out, self.data = self.data, b""
        return out


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({}, "missing"),
        ({"Authorization": "nvapi-abc"}, "Bearer"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
        ({"Authorization": "Bearer not-an-nvapi-key"}, "nvapi-"),
    ],
)
def test_every_call_needs_a_bearer_key(api: Api, headers: dict[str, str], fragment: str) -> None:
    aid = str(uuid.uuid4())
    calls = [
        ("POST", "/v2/nvcf/assets"),
        ("GET", "/v2/nvcf/assets"),
        ("GET", f"/v2/nvcf/assets/{aid}"),
        ("DELETE", f"/v2/nvcf/assets/{aid}"),
    ]
    for method, path in calls:
        r = requests.request(
            method, f"{api.base_url}{path}", headers=headers, json={"contentType": "a/b"}
        )
        assert r.status_code == 401, (method, path)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert fragment in r.json()["detail"]
    assert api.emulator.stored_assets() == []


TWO_ACCOUNTS = {"nvapi-alice-key": "nca-alice", "nvapi-bob-key": "nca-bob"}


@pytest.mark.nvcf(api_keys=TWO_ACCOUNTS)
def test_accounts_never_see_each_others_assets(api: Api) -> None:
    alice = {"Authorization": "Bearer nvapi-alice-key"}
    bob = {"Authorization": "Bearer nvapi-bob-key"}
    asset = api.create_asset(key="nvapi-alice-key")
    assert api.upload(asset).status_code == 200
    aid = asset["assetId"]
    assert "/nca-alice/" in asset["uploadUrl"]

    assert requests.get(f"{api.base_url}/v2/nvcf/assets", headers=bob).json() == {"assets": []}
    r = requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=bob)
    assert r.status_code == 404
    assert "nca-bob" in r.json()["detail"]
    assert requests.delete(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=bob).status_code == 404
    # Alice still has it, bytes intact.
    assert requests.get(f"{api.base_url}/v2/nvcf/assets/{aid}", headers=alice).status_code == 200
    assert api.emulator.asset_bytes(aid) == b"hello"
    # An unknown key is refused even though it looks like an API key.
    r = requests.get(
        f"{api.base_url}/v2/nvcf/assets", headers={"Authorization": "Bearer nvapi-mallory"}
    )
    assert r.status_code == 401


@pytest.mark.nvcf(api_keys=TWO_ACCOUNTS)
def test_a_url_re_pointed_at_another_account_is_refused(api: Api) -> None:
    alice_asset = api.create_asset(key="nvapi-alice-key")
    bob_asset = api.create_asset(key="nvapi-bob-key")
    forged = alice_asset["uploadUrl"].replace(
        f"nca-alice/{alice_asset['assetId']}", f"nca-bob/{bob_asset['assetId']}"
    )
    r = api.upload(bob_asset | {"uploadUrl": forged})
    assert r.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in r.text
    assert not any(a.uploaded for a in api.emulator.stored_assets())


def test_unknown_route_and_method_are_problem_json(api: Api) -> None:
    r = requests.get(f"{api.base_url}/v2/nvcf/nothing", headers=api.headers)
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"
    r = requests.put(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert r.status_code == 405
    assert "PUT" in r.json()["detail"]
