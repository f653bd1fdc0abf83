"""The function management API: create, versions, list, deploy, undeploy, delete, images."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from flask import Flask, request

from nvcf_emulator import Emulator

API = "https://api.nvcf.nvidia.com"
NGC = "https://api.ngc.nvidia.com"
DEPLOY_SPEC = {
    "deploymentSpecifications": [
        {
            "gpu": "L40S",
            "instanceType": "gl40s_1.br25_2xlarge",
            "minInstances": 1,
            "maxInstances": 2,
        }
    ]
}


def image_app(tag: str) -> Flask:
    app = Flask(f"image-{tag}")

    @app.get("/v2/health/ready")
    def ready() -> str:
        return "ok"

    @app.post("/predict")
    def predict() -> dict[str, Any]:
        return {"image": tag, "function": request.headers["NVCF-FUNCTION-NAME"]}

    return app


def create(emu: Emulator, base: str = API, **body: Any) -> requests.Response:
    payload = {"name": "my-fn", "inferenceUrl": "/predict", "containerImage": "nvcr.io/me/img:1"}
    payload.update(body)
    return requests.post(f"{base}/v2/nvcf/functions", headers=emu.headers, json=payload)


def test_create_deploy_invoke_through_the_api(nvcf: Emulator) -> None:
    nvcf.register_image("nvcr.io/me/img:1", image_app("one"))
    r = create(nvcf, description="a test function", tags=["t1"])
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    assert fn["status"] == "INACTIVE"
    assert fn["name"] == "my-fn"
    assert fn["ncaId"] == "nvcf-emulator-nca"
    assert fn["inferencePort"] == 8000
    assert fn["healthUri"] == "/v2/health/ready"
    assert fn["health"] == {
        "protocol": "HTTP",
        "uri": "/v2/health/ready",
        "port": 8000,
        "timeout": "PT10S",
        "expectedStatusCode": 200,
    }
    assert fn["functionType"] == "DEFAULT"
    assert fn["description"] == "a test function"
    fid, vid = fn["id"], fn["versionId"]
    invoke_url = f"{API}/v2/nvcf/pexec/functions/{fid}"
    assert requests.post(invoke_url, headers=nvcf.headers, json={}).status_code == 404

    d = requests.post(
        f"{API}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers=nvcf.headers,
        json=DEPLOY_SPEC,
    )
    assert d.status_code == 200, d.text
    deployment = d.json()["deployment"]
    assert deployment["functionId"] == fid
    assert deployment["functionVersionId"] == vid
    specs = deployment["deploymentSpecifications"]
    assert all(uuid.UUID(spec.pop("gpuSpecificationId")) for spec in specs)  # NVCF's, per spec
    assert specs == DEPLOY_SPEC["deploymentSpecifications"]
    got = requests.get(f"{API}/v2/nvcf/functions/{fid}/versions/{vid}", headers=nvcf.headers)
    assert got.json()["function"]["status"] == "ACTIVE"
    assert got.json()["function"]["activeInstances"][0]["gpu"] == "L40S"

    r = requests.post(invoke_url, headers=nvcf.headers, json={})
    assert r.status_code == 200
    assert r.json() == {"image": "one", "function": "my-fn"}
    assert nvcf.invocations[-1].container_headers["NVCF-INSTANCETYPE"] == "gl40s_1.br25_2xlarge"

    u = requests.delete(
        f"{API}/v2/nvcf/deployments/functions/{fid}/versions/{vid}", headers=nvcf.headers
    )
    assert u.status_code == 200
    assert u.json()["function"]["status"] == "INACTIVE"
    assert requests.post(invoke_url, headers=nvcf.headers, json={}).status_code == 404


def test_versions_list_ids_and_delete(nvcf: Emulator) -> None:
    first = create(nvcf).json()["function"]
    fid = first["id"]
    second = requests.post(
        f"{API}/v2/nvcf/functions/{fid}/versions",
        headers=nvcf.headers,
        # NVCF's version body is a full create body: the name is required (CreateFunctionRequest)
        json={"name": "my-fn", "inferenceUrl": "/v2/predict", "containerImage": "nvcr.io/me/img:2"},
    )
    assert second.status_code == 200, second.text
    v2 = second.json()["function"]
    assert v2["id"] == fid and v2["versionId"] != first["versionId"]
    assert v2["name"] == "my-fn"
    other = create(nvcf, name="other-fn").json()["function"]

    listed = requests.get(f"{API}/v2/nvcf/functions", headers=nvcf.headers).json()["functions"]
    assert sorted((f["name"], f["versionId"]) for f in listed) == sorted(
        [
            ("my-fn", first["versionId"]),
            ("my-fn", v2["versionId"]),
            ("other-fn", other["versionId"]),
        ]
    )
    ids = requests.get(f"{API}/v2/nvcf/functions/ids", headers=nvcf.headers).json()
    assert sorted(ids["functionIds"]) == sorted([fid, other["id"]])
    versions = requests.get(f"{API}/v2/nvcf/functions/{fid}/versions", headers=nvcf.headers)
    assert {f["versionId"] for f in versions.json()["functions"]} == {
        first["versionId"],
        v2["versionId"],
    }

    gone = requests.delete(
        f"{API}/v2/nvcf/functions/{fid}/versions/{first['versionId']}", headers=nvcf.headers
    )
    assert gone.status_code == 204
    assert gone.content == b""
    again = requests.get(
        f"{API}/v2/nvcf/functions/{fid}/versions/{first['versionId']}", headers=nvcf.headers
    )
    assert again.status_code == 404
    assert again.headers["Content-Type"] == "application/problem+json"


@pytest.mark.nvcf(api_keys={"nvapi-a": "nca-a", "nvapi-b": "nca-b"})
def test_functions_are_per_account_and_visibility_filters(nvcf: Emulator) -> None:
    as_a = {"Authorization": "Bearer nvapi-a"}
    as_b = {"Authorization": "Bearer nvapi-b"}
    mine = requests.post(
        f"{API}/v2/nvcf/functions",
        headers=as_a,
        json={"name": "a-fn", "inferenceUrl": "/x", "containerImage": "img"},
    ).json()["function"]
    shared = nvcf.add_function(
        lambda req: {"shared": True}, name="b-shared", nca_id="nca-b", shared_with=["nca-a"]
    )

    def names(headers: dict[str, str], query: str = "") -> list[str]:
        r = requests.get(f"{API}/v2/nvcf/functions{query}", headers=headers)
        assert r.status_code == 200, r.text
        return sorted(f["name"] for f in r.json()["functions"])

    assert names(as_a) == ["a-fn", "b-shared"]
    assert names(as_a, "?visibility=private") == ["a-fn"]
    assert names(as_a, "?visibility=authorized") == ["b-shared"]
    assert names(as_a, "?visibility=private,authorized") == ["a-fn", "b-shared"]
    assert names(as_a, "?visibility=private&visibility=authorized") == ["a-fn", "b-shared"]
    assert names(as_b) == ["b-shared"]
    bad = requests.get(f"{API}/v2/nvcf/functions?visibility=everyone", headers=as_a)
    assert bad.status_code == 400
    listed = requests.get(f"{API}/v2/nvcf/functions?visibility=authorized", headers=as_a)
    assert listed.json()["functions"][0]["ownedByDifferentAccount"] is True
    # b cannot see a's function; a may invoke what b shared with it
    r = requests.get(f"{API}/v2/nvcf/functions/{mine['id']}/versions", headers=as_b)
    assert r.status_code == 404
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{shared.function_id}", headers=as_a, json={})
    assert r.status_code == 200
    assert nvcf.invocations[-1].container_headers["NVCF-NCAID"] == "nca-a"  # the caller's


def test_validation_errors_are_400(nvcf: Emulator) -> None:
    for body, words in [
        ({"name": "-bad"}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"inferenceUrl": None}, "inferenceUrl"),
        ({"inferencePort": 70000}, "inferencePort"),
        ({"apiBodyFormat": "XML"}, "apiBodyFormat"),
        ({"helmChart": "oci://chart"}, "helmChart"),
        ({"tags": ["t"] * 65}, "tags"),
    ]:
        r = create(nvcf, **body)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["detail"]
    fn = create(nvcf).json()["function"]
    url = f"{API}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    r = requests.post(url, headers=nvcf.headers, json={"deploymentSpecifications": [{}]})
    assert r.status_code == 400
    assert "gpu" in r.json()["detail"]


def test_bodies_the_openapi_document_rules_out_are_400_not_500(nvcf: Emulator) -> None:
    """Found by fuzzing: these were 500s (secrets not a list; a health status that is not a
    number broke every later call of the account once deployed) or accepted against the
    documented schema."""
    nvcf.register_image("nvcr.io/me/img:1", image_app("one"))
    for body, words in [
        ({"secrets": 5}, "secrets"),
        ({"secrets": [1]}, "secrets"),
        ({"secrets": [{"value": "v"}]}, "secrets"),
        ({"health": {"expectedStatusCode": "x"}}, "expectedStatusCode"),
        ({"health": {"expectedStatusCode": True}}, "expectedStatusCode"),
        ({"apiBodyFormat": ""}, "apiBodyFormat"),
        ({"functionType": ""}, "functionType"),
        ({"containerImage": None, "helmChart": 5, "helmChartServiceName": "svc"}, "helmChart"),
        ({"containerImage": None, "helmChart": "oci://c", "helmChartServiceName": ""}, "helm"),
    ]:
        r = create(nvcf, **body)
        assert r.status_code == 400, (body, r.text)
        assert words in r.json()["detail"]
    # JSON Schema's integers (and Jackson's): 8000.0 is 8000
    fn = create(nvcf, inferencePort=8000.0, secrets=[{"name": "k", "value": "v"}]).json()
    assert fn["function"]["inferencePort"] == 8000
    assert fn["function"]["secrets"] == ["k"]  # FunctionDto: Set<String>, names only
    # a health object has all its members (HealthDto: each @NotNull)
    health = {
        "protocol": "HTTP",
        "uri": "/v2/health/ready",
        "port": 8000,
        "timeout": "PT10S",
        "expectedStatusCode": 200,
    }
    fn = create(nvcf, health=health).json()["function"]
    url = f"{API}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    for spec, words in [
        ({"gpu": None}, "gpu"),
        ({"instanceType": 1}, "instanceType"),
        ({"backend": None}, "backend"),
        ({"minInstances": True}, "minInstances"),
        ({"maxInstances": True}, "maxInstances"),
    ]:
        body = {
            "deploymentSpecifications": [{**DEPLOY_SPEC["deploymentSpecifications"][0], **spec}]
        }
        r = requests.post(url, headers=nvcf.headers, json=body)
        assert r.status_code == 400, (spec, r.text)
        assert words in r.json()["detail"]
    assert requests.post(url, headers=nvcf.headers, json=DEPLOY_SPEC).status_code == 200
    assert requests.get(f"{API}/v2/nvcf/functions", headers=nvcf.headers).status_code == 200


def test_unregistered_image_goes_to_error(nvcf: Emulator) -> None:
    fn = create(nvcf, containerImage="nvcr.io/nobody/none:0").json()["function"]
    url = f"{API}/v2/nvcf/deployments/functions/{fn['id']}/versions/{fn['versionId']}"
    assert requests.post(url, headers=nvcf.headers, json=DEPLOY_SPEC).status_code == 200
    got = requests.get(url, headers=nvcf.headers).json()["deployment"]
    assert got["functionStatus"] == "ERROR"
    assert got["healthInfo"] == [
        {
            "error": "no container is registered for image 'nvcr.io/nobody/none:0' "
            "(Emulator.register_image)"
        }
    ]


@pytest.mark.nvcf(deploy_delay=30)
def test_deploying_until_the_delay_has_passed_on_the_clock(nvcf: Emulator) -> None:
    nvcf.register_image("img:1", image_app("one"))
    fn = create(nvcf, containerImage="img:1").json()["function"]
    fid, vid = fn["id"], fn["versionId"]
    deploy = requests.post(
        f"{API}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers=nvcf.headers,
        json=DEPLOY_SPEC,
    )
    assert deploy.json()["deployment"]["functionStatus"] == "DEPLOYING"
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert r.status_code == 404
    nvcf.clock.advance(30)
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert r.status_code == 200


def test_metadata_update_and_ngc_org_paths(nvcf: Emulator) -> None:
    fn = create(nvcf, base=NGC, tags=["old"]).json()["function"]
    r = requests.put(
        f"{NGC}/v2/orgs/my-org/nvcf/metadata/functions/{fn['id']}/versions/{fn['versionId']}",
        headers=nvcf.headers,
        json={"tags": ["a", "b"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["function"]["tags"] == ["a", "b"]
    team = requests.get(
        f"{NGC}/v2/orgs/my-org/teams/my-team/nvcf/functions/{fn['id']}/versions",
        headers=nvcf.headers,
    )
    assert team.status_code == 200
    assert team.json()["functions"][0]["tags"] == ["a", "b"]


def test_add_function_explains_a_failing_health_check(nvcf: Emulator) -> None:
    with pytest.raises(RuntimeError, match="GET /v2/health/ready answered 404"):
        nvcf.add_function(Flask("no-health"), name="no-health")
    app = Flask("custom")
    app.add_url_rule("/healthz", "healthz", lambda: "ok")
    app.add_url_rule("/", "root", lambda: {"root": True}, methods=["POST"])
    fid, vid = nvcf.add_function(app, name="custom", health_uri="/healthz")
    assert nvcf.function(fid, vid).status.value == "ACTIVE"
    r = requests.post(f"{API}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={})
    assert r.json() == {"root": True}


def test_persistent_functions_survive_reset(nvcf: Emulator) -> None:
    kept = nvcf.add_function(lambda req: {"kept": True}, name="kept", persistent=True)
    gone = nvcf.add_function(lambda req: {"gone": True}, name="gone")
    nvcf.reset()
    url = f"{API}/v2/nvcf/pexec/functions"
    r = requests.post(f"{url}/{kept.function_id}", headers=nvcf.headers, json={})
    assert r.json() == {"kept": True}
    assert (
        requests.post(f"{url}/{gone.function_id}", headers=nvcf.headers, json={}).status_code == 404
    )
    listed = requests.get(f"{API}/v2/nvcf/functions", headers=nvcf.headers).json()["functions"]
    assert [(f["id"], f["versionId"], f["status"]) for f in listed] == [
        (kept.function_id, kept.version_id, "ACTIVE")
    ]
