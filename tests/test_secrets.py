"""Function secrets: given at create time or with ``PUT /v2/nvcf/secrets/functions/{fid}/versions/
{vid}`` (NVCF's SecretManagementFacade rules), listed by name only, and delivered to the
container as NVCF delivers them: a ``secrets.json`` of name to value, rewritten when they
change. NVIDIA's own secrets sample (``tests/samples/secrets_server.py``) reads them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from nvcf_emulator import ContainerRequest, Emulator
from nvcf_emulator.worker.secrets import SecretFiles
from tests.conftest import Api
from tests.samples import secrets_server

IMAGE = "nvcr.io/me/secrets-sample:1"
SPEC = {"gpu": "L40S", "instanceType": "gl40s_1", "minInstances": 1, "maxInstances": 1}


def create(api: Api, *, key: str | None = None, **body: Any) -> requests.Response:
    payload = {"name": "with-secrets", "inferenceUrl": "/test", "containerImage": IMAGE}
    payload.update(body)
    headers = {"Authorization": f"Bearer {key}"} if key else api.headers
    return requests.post(f"{api.base_url}/v2/nvcf/functions", headers=headers, json=payload)


def put_secrets(
    api: Api, fid: str, vid: str, body: Any, *, key: str | None = None
) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else api.headers
    return requests.put(
        f"{api.base_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}", headers=headers, json=body
    )


def get_version(api: Api, fid: str, vid: str, query: str = "") -> requests.Response:
    url = f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}{query}"
    return requests.get(url, headers=api.headers)


def secret(name: str, value: Any) -> dict[str, Any]:
    return {"name": name, "value": value}


def ids(r: requests.Response) -> tuple[str, str]:
    assert r.status_code == 200, r.text
    fn = r.json()["function"]
    return fn["id"], fn["versionId"]


def detail(r: requests.Response) -> str:
    return str(r.json()["detail"])


# -- the story: NVIDIA's secrets sample, created, rotated, invoked ------------------------------


def test_the_secrets_sample_reads_what_the_api_set_and_sees_a_rotation(
    api: Api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    emu = api.emulator
    emu.register_image(IMAGE, secrets_server.app)
    r = create(
        api,
        healthUri="/health",
        secrets=[secret("secret-key-1", "value-1"), secret("db", {"user": "u", "port": 5432})],
    )
    fid, vid = ids(r)
    assert sorted(r.json()["function"]["secrets"]) == ["db", "secret-key-1"]
    # While INACTIVE a version takes new secrets; they are merged into what it has.
    assert (
        put_secrets(api, fid, vid, {"secrets": [secret("secret-key-2", "value-2")]}).status_code
        == 204
    )
    deployed = requests.post(
        f"{api.base_url}/v2/nvcf/deployments/functions/{fid}/versions/{vid}",
        headers=api.headers,
        json={"deploymentSpecifications": [SPEC]},
    )
    assert deployed.status_code == 200, deployed.text
    # The sample reads SECRETS_PATH (NVCF: /var/secrets/secrets.json); here, the emulator's file.
    monkeypatch.setattr(secrets_server, "SECRETS_PATH", str(emu.secrets_file(fid, vid)))
    monkeypatch.setattr(secrets_server, "ACCOUNTS_SECRETS_PATH", str(tmp_path / "none.json"))

    def invoke(body: dict[str, str]) -> Any:
        r = requests.post(
            f"{api.base_url}/v2/nvcf/pexec/functions/{fid}", headers=api.headers, json=body
        )
        assert r.status_code == 200, r.text
        return r.json()

    assert invoke({}) == {
        "function secrets": {
            "secret-key-1": "value-1",
            "db": {"user": "u", "port": 5432},
            "secret-key-2": "value-2",
        },
        "account secrets": {},
    }
    # ACTIVE, with secrets: a rotation replaces a value and keeps the others.
    rotated = put_secrets(api, fid, vid, {"secrets": [secret("secret-key-1", "value-1b")]})
    assert rotated.status_code == 204, rotated.text
    assert rotated.content == b""
    assert invoke({"key": "secret-key-1"})["function secrets"] == {"secret-key-1": "value-1b"}
    assert invoke({"key": "db"})["function secrets"] == {"db": {"user": "u", "port": 5432}}
    # The names only, in every answer of the control plane; never a value.
    listed = get_version(api, fid, vid).json()["function"]
    assert sorted(listed["secrets"]) == ["db", "secret-key-1", "secret-key-2"]
    assert "value-1b" not in get_version(api, fid, vid).text


def test_the_file_holds_name_to_value_is_private_and_goes_with_the_version(api: Api) -> None:
    emu = api.emulator
    fid, vid = ids(create(api, secrets=[secret("TOKEN", "s3cr3t"), secret("cfg", {"a": [1]})]))
    path = emu.secrets_file(fid, vid)
    assert json.loads(path.read_text()) == {"TOKEN": "s3cr3t", "cfg": {"a": [1]}}
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    state = requests.get(f"{api.base_url}/_emulator/state")
    (version,) = [
        v for f in state.json()["functions"] for v in f["versions"] if v["versionId"] == vid
    ]
    assert version["secretsFile"] == str(path)
    gone = requests.delete(
        f"{api.base_url}/v2/nvcf/functions/{fid}/versions/{vid}", headers=api.headers
    )
    assert gone.status_code == 204
    assert not path.exists()
    assert not path.parent.exists()


def test_a_version_without_secrets_has_no_file(api: Api) -> None:
    fid, vid = ids(create(api))
    assert "secrets" not in get_version(api, fid, vid).json()["function"]
    assert not api.emulator.secrets_file(fid, vid).exists()
    state = requests.get(f"{api.base_url}/_emulator/state")
    assert [v["secretsFile"] for f in state.json()["functions"] for v in f["versions"]] == [None]


def test_an_in_process_callable_reads_the_file_it_is_pointed_at(
    nvcf: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: ContainerRequest) -> dict[str, Any]:
        with open(os.environ["SECRETS_PATH"], encoding="utf-8") as f:
            return {"token": json.load(f)["TOKEN"]}

    fid, vid = nvcf.add_function(handler, secrets=[secret("TOKEN", "from-python")])
    monkeypatch.setenv("SECRETS_PATH", str(nvcf.secrets_file(fid, vid)))
    r = requests.post(
        f"{nvcf.base_url}/v2/nvcf/pexec/functions/{fid}", headers=nvcf.headers, json={}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"token": "from-python"}


def test_secrets_file_names_both_ids_when_there_is_no_such_version(nvcf: Emulator) -> None:
    fid, _ = nvcf.add_function(lambda req: {})
    missing = str(uuid.uuid4())
    with pytest.raises(KeyError, match=missing):
        nvcf.secrets_file(fid, missing)


def test_the_files_are_gone_when_the_emulator_closes(tmp_path: Path) -> None:
    with Emulator(root_dir=tmp_path / "root") as emu:
        fid, vid = emu.add_function(lambda req: {}, secrets=[secret("K", "v")])
        path = emu.secrets_file(fid, vid)
        assert path.exists()
    assert not path.exists()
    assert not (tmp_path / "root" / "secrets").exists()


def test_a_state_dir_keeps_the_secrets_and_writes_the_file_again(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Emulator(state_dir=state) as emu:
        account = emu.accounts.authenticate(emu.headers["Authorization"])
        version = emu.functions.create(
            account, {"name": "kept", "inferenceUrl": "/", "secrets": [secret("K", "v1")]}
        )
        fid, vid = version.function_id, version.version_id
    assert not (state / "secrets").exists()
    with Emulator(state_dir=state) as emu:
        assert json.loads(emu.secrets_file(fid, vid).read_text()) == {"K": "v1"}
        api = Api("inprocess", emu.base_url, emu)
        assert put_secrets(api, fid, vid, {"secrets": [secret("K", "v2")]}).status_code == 204
    with Emulator(state_dir=state) as emu:
        assert json.loads(emu.secrets_file(fid, vid).read_text()) == {"K": "v2"}


def test_a_file_that_cannot_be_written_is_a_warning_and_leaves_no_stale_values(
    nvcf: Emulator, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid, vid = nvcf.add_function(lambda req: {}, secrets=[secret("K", "old")])
    path = nvcf.secrets_file(fid, vid)
    assert path.exists()

    def full_disk(self: SecretFiles, version_id: str, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SecretFiles, "_write", full_disk)
    api = Api("inprocess", nvcf.base_url, nvcf)
    with caplog.at_level(logging.WARNING, logger="nvcf_emulator.secrets"):
        r = put_secrets(api, fid, vid, {"secrets": [secret("K", "new")]})
    assert r.status_code == 204, r.text  # the secrets changed; the file could not follow
    assert "could not write the secrets file" in caplog.text
    assert "No space left on device" in caplog.text
    assert not path.exists()  # not the old value
    monkeypatch.undo()  # space again: the next change writes it
    assert put_secrets(api, fid, vid, {"secrets": [secret("K", "newer")]}).status_code == 204
    assert json.loads(path.read_text()) == {"K": "newer"}


# -- what NVCF refuses ----------------------------------------------------------------------------


def test_an_active_version_without_secrets_takes_none(api: Api) -> None:
    fid, vid = api.emulator.add_function(lambda req: {}, name="active")
    r = put_secrets(api, fid, vid, {"secrets": [secret("K", "v")]})
    assert r.status_code == 400
    assert detail(r) == (
        f"Function id '{fid}', version '{vid}': Add secrets only when the function is 'INACTIVE'"
    )
    assert not api.emulator.secrets_file(fid, vid).exists()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"secrets": []}, "Missing secrets in the payload"),
        ({}, "'secrets' must not be null"),
        ({"secrets": None}, "'secrets' must not be null"),
        ({"secrets": "K=v"}, "secrets must be a list of {name, value} objects"),
        (
            {"secrets": [secret("K", "a"), secret("K", "b")]},
            "Duplicate secrets keys in the payload",
        ),
        ({"secrets": [secret("-K", "v")]}, "Invalid secret name"),
        ({"secrets": [secret("K" * 49, "v")]}, "Invalid secret name"),
        ({"secrets": [secret("K", "   ")]}, "has no value"),
        ({"secrets": [secret("K", None)]}, "has no value"),
        ({"secrets": [secret("K", "x" * 32769)]}, "between 1 - 32768 chars long, got 32769"),
        ({"secrets": [{"name": "K"}]}, "has no value"),
    ],
)
def test_bad_updates_are_400_and_change_nothing(api: Api, body: Any, says: str) -> None:
    fid, vid = ids(create(api, secrets=[secret("K", "kept")]))
    r = put_secrets(api, fid, vid, body)
    assert r.status_code == 400, r.text
    assert says in detail(r)
    assert r.headers["Content-Type"] == "application/problem+json"
    assert json.loads(api.emulator.secrets_file(fid, vid).read_text()) == {"K": "kept"}


def test_the_same_pair_twice_is_one_secret_and_values_are_measured_as_nvcf_does(api: Api) -> None:
    r = create(api, secrets=[secret("K", "v"), secret("K", "v")])
    fid, vid = ids(r)
    assert r.json()["function"]["secrets"] == ["K"]
    # The limit is on the trimmed text; an object counts as its compact JSON.
    edge = "x" * 32768
    ok = put_secrets(api, fid, vid, {"secrets": [secret("A", f"  {edge}  ")]})
    assert ok.status_code == 204, ok.text
    big = {"k": "x" * (32768 - len('{"k":""}') + 1)}
    too_big = put_secrets(api, fid, vid, {"secrets": [secret("B", big)]})
    assert too_big.status_code == 400
    assert "got 32769" in detail(too_big)
    # Java counts UTF-16 units: an emoji is two.
    emoji = put_secrets(api, fid, vid, {"secrets": [secret("C", "\U0001f600" * 16385)]})
    assert emoji.status_code == 400
    assert "got 32770" in detail(emoji)


def test_create_refuses_duplicate_names_naming_the_new_ids(api: Api) -> None:
    r = create(api, secrets=[secret("K", "a"), secret("K", "b")])
    assert r.status_code == 400
    assert "Duplicate secrets keys in the payload" in detail(r)
    assert requests.get(f"{api.base_url}/v2/nvcf/functions", headers=api.headers).json() == {
        "functions": []
    }


@pytest.mark.nvcf(api_keys={"nvapi-a": "nca-a", "nvapi-b": "nca-b"})
def test_only_the_owner_updates_and_others_get_404(nvcf: Emulator) -> None:
    api = Api("inprocess", nvcf.base_url, nvcf)
    fid, vid = ids(create(api, key="nvapi-a", secrets=[secret("K", "a")]))
    shared = nvcf.add_function(
        lambda req: {}, name="b-shared", nca_id="nca-b", shared_with=["nca-a"]
    )
    for who, f, v, nca in (
        ("nvapi-b", fid, vid, "nca-b"),  # another account's function
        ("nvapi-a", shared.function_id, shared.version_id, "nca-a"),  # shared with it
        ("nvapi-a", fid, str(uuid.uuid4()), "nca-a"),  # no such version
    ):
        r = put_secrets(api, f, v, {"secrets": [secret("K", "b")]}, key=who)
        assert r.status_code == 404, r.text
        assert detail(r) == f"Function id '{f}', version '{v}': Not found in account '{nca}'"
    assert json.loads(nvcf.secrets_file(fid, vid).read_text()) == {"K": "a"}
    no_key = requests.put(
        f"{nvcf.base_url}/v2/nvcf/secrets/functions/{fid}/versions/{vid}",
        json={"secrets": [secret("K", "c")]},
    )
    assert no_key.status_code == 401
    not_uuid = put_secrets(api, "not-a-uuid", vid, {"secrets": [secret("K", "c")]}, key="nvapi-a")
    assert not_uuid.status_code == 400


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("", True),
        ("?includeSecrets=true", True),
        ("?includeSecrets=FALSE", False),
        ("?includeSecrets=0", False),
        ("?includeSecrets=", True),
        ("?includeSecrets=off", False),
    ],
)
def test_include_secrets_false_leaves_the_names_out(api: Api, query: str, shown: bool) -> None:
    fid, vid = ids(create(api, secrets=[secret("K", "v")]))
    r = get_version(api, fid, vid, query)
    assert r.status_code == 200, r.text
    assert ("secrets" in r.json()["function"]) is shown


def test_include_secrets_that_is_no_boolean_is_400(api: Api) -> None:
    fid, vid = ids(create(api, secrets=[secret("K", "v")]))
    r = get_version(api, fid, vid, "?includeSecrets=maybe")
    assert r.status_code == 400
    assert "includeSecrets" in detail(r)
