"""The environment NVCF gives a function's container (docs/user/function-creation.md,
"Environment Variables"): its ``containerEnvironment`` and the reserved ``NVCF_*`` variables,
with the values the worker's ``NVCF-*`` headers carry (``Emulator.container_environment``).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import requests

from nvcf_emulator import ContainerRequest, Emulator

SPEC = {
    "gpu": "L40S",
    "instanceType": "gl40s_1.br25_2xlarge",
    "backend": "GFN",
    "minInstances": 1,
    "maxInstances": 1,
}


def headers_seen(request: ContainerRequest) -> dict[str, Any]:
    return {k.upper(): v for k, v in request.headers.items() if k.upper().startswith("NVCF-")}


def test_the_environment_has_the_nvcf_variables_and_the_functions_own(nvcf: Emulator) -> None:
    fid, vid = nvcf.add_function(
        headers_seen,
        name="env-fn",
        containerEnvironment=[
            {"key": "MODEL_NAME", "value": "llama"},
            {"key": "NVCF_FUNCTION_ID", "value": "spoofed"},  # reserved: NVCF's value wins
        ],
    )
    env = nvcf.container_environment(fid, vid)
    assert env == {
        "MODEL_NAME": "llama",
        "NVCF_BACKEND": "nvcf-emulator",
        "NVCF_ENV": "emulator",
        "NVCF_FUNCTION_ID": fid,
        "NVCF_FUNCTION_NAME": "env-fn",
        "NVCF_FUNCTION_VERSION_ID": vid,
        "NVCF_INSTANCETYPE": "EMULATOR",
        "NVCF_NCA_ID": nvcf.config.default_nca_id,
        "NVCF_REGION": nvcf.config.region,
    }
    # The same values as the headers of a call.
    sent = requests.post(
        f"{nvcf.base_url}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={}
    ).json()
    for name in (
        "BACKEND",
        "ENV",
        "FUNCTION_ID",
        "FUNCTION_NAME",
        "FUNCTION_VERSION_ID",
        "INSTANCETYPE",
        "REGION",
    ):
        assert sent[f"NVCF-{name.replace('_', '-')}"] == env[f"NVCF_{name}"], name


def test_a_deployment_sets_backend_and_instance_type(nvcf: Emulator) -> None:
    nvcf.register_image("nvcr.io/me/env:1", headers_seen)
    created = requests.post(
        f"{nvcf.base_url}/v2/nvcf/functions",
        headers=nvcf.headers,
        json={"name": "deployed", "inferenceUrl": "/", "containerImage": "nvcr.io/me/env:1"},
    ).json()["function"]
    fid, vid = created["id"], created["versionId"]
    deployed = requests.post(
        f"{nvcf.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers=nvcf.headers,
        json={"deploymentSpecifications": [SPEC]},
    )
    assert deployed.status_code == 200, deployed.text
    env = nvcf.container_environment(fid, vid)
    assert (env["NVCF_BACKEND"], env["NVCF_INSTANCETYPE"]) == ("GFN", "gl40s_1.br25_2xlarge")
    sent = requests.post(
        f"{nvcf.base_url}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={}
    ).json()
    assert (sent["NVCF-BACKEND"], sent["NVCF-INSTANCETYPE"]) == ("GFN", "gl40s_1.br25_2xlarge")


def test_an_in_process_container_reads_it_when_the_test_sets_it(
    nvcf: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def reads_env(request: ContainerRequest) -> dict[str, str | None]:
        return {"function": os.environ.get("NVCF_FUNCTION_ID"), "model": os.environ.get("MODEL")}

    fid, vid = nvcf.add_function(reads_env, containerEnvironment=[{"key": "MODEL", "value": "m"}])
    for key, value in nvcf.container_environment(fid, vid).items():
        monkeypatch.setenv(key, value)
    r = requests.post(f"{nvcf.base_url}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers)
    assert r.json() == {"function": fid, "model": "m"}


def test_an_unknown_version_is_a_key_error_naming_it(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(headers_seen)
    missing = str(uuid.uuid4())
    with pytest.raises(KeyError, match=missing):
        nvcf.container_environment(fid, missing)
