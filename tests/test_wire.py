"""Wire details clients depend on, identical in-process and over a socket."""

from __future__ import annotations

from urllib.parse import unquote

import requests

from .conftest import Api


def test_head_answers_like_get_without_a_body(api: Api) -> None:
    api.new_asset()
    get = requests.get(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    head = requests.head(f"{api.base_url}/v2/nvcf/assets", headers=api.headers)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == str(len(get.content))


def test_upload_url_survives_being_url_decoded_once(api: Api) -> None:
    asset = api.create_asset(description="red cat/photo")
    decoded = unquote(asset["uploadUrl"])
    assert decoded != asset["uploadUrl"]
    r = api.upload(asset | {"uploadUrl": decoded})
    assert r.status_code == 200, r.text


def test_problem_json_carries_every_member(api: Api) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    r = requests.get(f"{api.base_url}/v2/nvcf/assets/{unknown}", headers=api.headers)
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"type", "title", "status", "detail", "instance", "requestId"}
    assert body["type"] == "urn:kaizen:problem-details:not-found"
    assert body["instance"] == f"/v2/nvcf/assets/{unknown}"


def test_create_and_put_are_200_not_201(api: Api) -> None:
    asset = api.create_asset()
    assert api.upload(asset).status_code == 200
