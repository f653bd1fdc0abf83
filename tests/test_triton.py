"""TritonContainer: Python-backend models behind the KServe v2 JSON protocol, as NVCF calls them.

Each test writes a tiny model repository, registers it as a function and invokes it the way a
client does (pexec), or calls the container the way the worker does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.datastructures import Headers

from nvcf_emulator import Emulator
from nvcf_emulator.triton import TritonContainer, TritonLoadError, parse_pbtxt
from nvcf_emulator.worker.containers import ContainerRequest

API = "https://api.nvcf.nvidia.com"
ROOT = Path(__file__).resolve().parent.parent

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "IN", data_type: TYPE_FP32, dims: [ 2 ] }} ]
output [ {{ name: "OUT", data_type: TYPE_FP32, dims: [ 2 ] }},
         {{ name: "PARAMS", data_type: TYPE_STRING, dims: [ 1 ] }} ]
"""

# A model that doubles IN and answers its request parameters (what Triton forwarded).
ECHO = """
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from triton_python_backend_utils import helpers


class TritonPythonModel:
    def initialize(self, args):
        self.args = args

    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            seen = {
                "parameters": json.loads(request.parameters()),
                "input_path": helpers.get_input_path(),
                "output_path": helpers.get_output_path(),
                "asset_id_env": os.environ.get("NVCF_ASSET_ID"),
                "args": self.args,
            }
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", (x * 2).astype(np.float32)),
                pb_utils.Tensor("PARAMS", np.array([json.dumps(seen).encode()], dtype=object)),
            ]))
        return out
"""


def make_repo(tmp: Path, name: str, model_py: str, max_batch_size: int = 0) -> Path:
    repo = tmp / "models"
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(
        CONFIG.format(name=name, max_batch_size=max_batch_size)
    )
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(model_py))
    return repo


@pytest.fixture
def echo_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, "echo", ECHO)


def worker_call(
    container: TritonContainer,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else b""
    resp = container.invoke(ContainerRequest(method, path, Headers(headers or {}), data))
    raw = resp.read()
    return resp.status, json.loads(raw) if raw else None


def infer_body(values: list[float] | None = None) -> dict[str, Any]:
    return {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32", "data": values or [1, 2]}]}


def seen(doc: dict[str, Any]) -> dict[str, Any]:
    (params,) = [o for o in doc["outputs"] if o["name"] == "PARAMS"]
    return dict(json.loads(params["data"][0]))


# -- through NVCF ----------------------------------------------------------------------------------


def test_pexec_with_assets_reaches_the_model_with_forwarded_headers(
    nvcf: Emulator, echo_repo: Path
) -> None:
    triton = TritonContainer(echo_repo)
    try:
        fid, _ = nvcf.add_function(triton, name="echo", inference_url="/v2/models/echo/infer")
        asset = requests.post(
            f"{API}/v2/nvcf/assets",
            headers=nvcf.headers,
            json={"contentType": "text/plain", "description": "d"},
        ).json()
        requests.put(
            asset["uploadUrl"],
            data=b"x",
            headers={"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "d"},
        ).raise_for_status()
        r = requests.post(
            f"{API}/v2/nvcf/pexec/functions/{fid}",
            json=infer_body([1.5, -2]),
            headers={
                **nvcf.headers,
                "NVCF-INPUT-ASSET-REFERENCES": asset["assetId"],
                "X-Trace": "not forwarded",
            },
        )
    finally:
        triton.close()

    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["model_name"] == "echo" and doc["model_version"] == "1"
    assert doc["outputs"][0] == {
        "name": "OUT",
        "datatype": "FP32",
        "shape": [2],
        "data": [3.0, -4.0],
    }
    model_saw = seen(doc)
    call = nvcf.invocations[-1]
    reqid = call.container_headers["NVCF-REQID"]
    params = model_saw["parameters"]
    assert params["NVCF-REQID"] == reqid
    assert params["NVCF-FUNCTION-ASSET-IDS"] == asset["assetId"]
    assert all(k.upper().startswith("NVCF-") for k in params)  # X-Trace, Content-Type: not
    assert model_saw["input_path"] == call.container_headers["NVCF-ASSET-DIR"]
    assert model_saw["output_path"] == call.container_headers["NVCF-LARGE-OUTPUT-DIR"]
    assert model_saw["input_path"].endswith(f"/{reqid}")
    assert model_saw["asset_id_env"] == asset["assetId"]
    assert "NVCF_ASSET_ID" not in os.environ  # only while the request ran
    assert model_saw["args"]["model_name"] == "echo"
    assert json.loads(model_saw["args"]["model_config"])["input"][0]["dims"] == [2]


def test_model_that_reads_an_unforwarded_header_fails_as_in_production(
    nvcf: Emulator, tmp_path: Path
) -> None:
    model = """
    import json
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [self.one(r) for r in requests]

        def one(self, request):
            asset_dir = json.loads(request.parameters())["NVCF-ASSET-DIR"]
            raise AssertionError(asset_dir)
    """
    triton = TritonContainer(make_repo(tmp_path, "strict", model), forward_pattern=None)
    try:
        fid, _ = nvcf.add_function(triton, name="strict", inference_url="/v2/models/strict/infer")
        r = requests.post(
            f"{API}/v2/nvcf/pexec/functions/{fid}", json=infer_body(), headers=nvcf.headers
        )
    finally:
        triton.close()

    assert r.status_code == 500
    problem = r.json()
    assert problem["type"] == "urn:inference-service:problem-details:internal-server-error"
    detail = problem["detail"]
    assert detail.startswith(
        "Failed to process the request(s) for model 'strict_0_0', message: "
        "KeyError: 'NVCF-ASSET-DIR'\n\nAt:\n"
    )
    assert "model.py(" in detail and "): one\n" in detail


# -- the forward pattern ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "forwarded"),
    [
        ("NVCF-.*", {"NVCF-REQID", "nvcf-sub", "X-NVCF-Trace"}),  # searched, case-insensitive
        ("^NVCF-.*", {"NVCF-REQID", "nvcf-sub"}),
        ("(?-i)NVCF-.*", {"NVCF-REQID", "X-NVCF-Trace"}),  # Triton's way to be case-sensitive
        ("(nvcf-.*|NVCF-.*)", {"NVCF-REQID", "nvcf-sub", "X-NVCF-Trace"}),  # NVCF docs' example
        (None, set()),
        ("", set()),
    ],
)
def test_forward_pattern_as_tritonserver_applies_it(
    echo_repo: Path, pattern: str | None, forwarded: set[str]
) -> None:
    triton = TritonContainer(echo_repo, forward_pattern=pattern)
    headers = {"NVCF-REQID": "r1", "nvcf-sub": "s", "X-NVCF-Trace": "t", "Accept": "a"}
    try:
        status, doc = worker_call(triton, "/v2/models/echo/infer", infer_body(), headers)
    finally:
        triton.close()
    assert status == 200
    assert set(seen(doc)["parameters"]) == forwarded


def test_reserved_header_names_are_refused_as_triton_does(echo_repo: Path) -> None:
    triton = TritonContainer(echo_repo, forward_pattern=".*")
    try:
        status, doc = worker_call(triton, "/v2/models/echo/infer", infer_body(), {"timeout": "5"})
    finally:
        triton.close()
    assert (status, doc) == (
        400,
        {"error": "Header 'timeout' is reserved for Triton usage and cannot be forwarded."},
    )


def test_body_parameters_and_headers_both_reach_the_model(echo_repo: Path) -> None:
    triton = TritonContainer(echo_repo)
    body = {**infer_body(), "parameters": {"temperature": 7, "mode": "fast"}}
    try:
        _, doc = worker_call(triton, "/v2/models/echo/infer", body, {"NVCF-REQID": "r"})
    finally:
        triton.close()
    assert seen(doc)["parameters"] == {"temperature": 7, "mode": "fast", "NVCF-REQID": "r"}
    assert seen(doc)["input_path"] == "/var/inf/inputAssets/r"  # NVIDIA's helper fallback


# -- the stand-in module -----------------------------------------------------------------------


def test_stand_in_module_is_importable_only_while_a_model_runs(echo_repo: Path) -> None:
    assert "triton_python_backend_utils" not in sys.modules
    triton = TritonContainer(echo_repo)
    try:
        assert "triton_python_backend_utils" not in sys.modules
        with pytest.raises(ImportError):
            import triton_python_backend_utils  # noqa: F401
        status, _ = worker_call(triton, "/v2/models/echo/infer", infer_body())
        assert status == 200
        assert "triton_python_backend_utils" not in sys.modules
    finally:
        triton.close()
    assert not [m for m in sys.modules if m.startswith("_nvcf_triton_model_")]


def test_lazy_imports_sibling_modules_and_lifecycle(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    model = f"""
    import numpy as np
    from util import double  # a module next to model.py, as Triton puts that dir on sys.path

    class TritonPythonModel:
        def initialize(self, args):
            open({str(log)!r}, "a").write("initialize\\n")

        def execute(self, requests):
            import triton_python_backend_utils as pb  # imported lazily, inside execute
            return [pb.InferenceResponse([pb.Tensor("OUT", double(
                pb.get_input_tensor_by_name(r, "IN").as_numpy()))]) for r in requests]

        def finalize(self):
            open({str(log)!r}, "a").write("finalize\\n")
    """
    repo = make_repo(tmp_path, "lazy", model)
    (repo / "lazy" / "1" / "util.py").write_text(
        "import numpy as np\n\ndef double(x):\n    return (x * 2).astype(np.float32)\n"
    )
    triton = TritonContainer(repo)
    assert log.read_text() == "initialize\n"
    status, doc = worker_call(
        triton,
        "/v2/models/lazy/versions/1/infer",
        {**infer_body([3, 4]), "outputs": [{"name": "OUT"}], "id": "abc"},
    )
    triton.close()
    triton.close()  # idempotent
    assert status == 200
    assert doc == {
        "model_name": "lazy",
        "model_version": "1",
        "id": "abc",
        "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [2], "data": [6.0, 8.0]}],
    }
    assert log.read_text() == "initialize\nfinalize\n"
    assert "util" not in sys.modules


def test_response_error_codes_map_to_http_status(tmp_path: Path) -> None:
    model = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            code = int(pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()[0])
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"code {code}", code))]
    """
    triton = TritonContainer(make_repo(tmp_path, "errs", model))
    try:
        statuses = {
            code: worker_call(triton, "/v2/models/errs/infer", infer_body([code, 0]))
            for code in range(8)
        }
    finally:
        triton.close()
    assert {code: s for code, (s, _) in statuses.items()} == {
        0: 400,
        1: 500,
        2: 404,
        3: 400,
        4: 503,
        5: 501,
        6: 400,
        7: 400,
    }
    assert statuses[2][1] == {"error": "code 2"}


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ("None", "expected one response for the request, the model sent 0"),
        ("{}", "Expected a list in the execute return, found type '<class 'dict'>'."),
        ("[]", "Number of InferenceResponse objects do not match"),
        ("['x']", "Expected an 'InferenceResponse' object in the execute function return list"),
    ],
)
def test_wrong_execute_returns(tmp_path: Path, returned: str, message: str) -> None:
    model = f"""
    class TritonPythonModel:
        def execute(self, requests):
            return {returned}
    """
    triton = TritonContainer(make_repo(tmp_path, "bad", model))
    try:
        status, doc = worker_call(triton, "/v2/models/bad/infer", infer_body())
    finally:
        triton.close()
    assert status == 500
    assert doc["error"].startswith(
        f"Failed to process the request(s) for model 'bad_0_0', message: {message}"
    )


# -- the KServe protocol -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (
            {"inputs": [{"name": "NOPE", "shape": [2], "datatype": "FP32", "data": [1, 2]}]},
            400,
            "unexpected inference input 'NOPE' for model 'echo'",
        ),
        (
            {"inputs": []},
            400,
            "[request id: <id_unknown>] expected 1 inputs but got 0 inputs for model 'echo'. "
            "Got input(s) [], but missing required input(s) ['IN']. "
            "Please provide all required input(s).",
        ),
        (
            {
                "id": "q",
                "inputs": [{"name": "IN", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}],
            },
            400,
            "[request id: q] unexpected shape for input 'IN' for model 'echo'. "
            "Expected [2], got [3]. ",
        ),
        (
            # Triton's HTTP server reads 'data' and reports a misfit as INTERNAL (500), word
            # for word (qa/L0_http/test.sh greps this body).
            {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32", "data": [1]}]},
            500,
            "Unable to parse 'data': Shape does not match true shape of 'data' field",
        ),
        (
            {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]},
            500,
            "Unable to parse 'data': input 'IN': FP32 expected numbers",
        ),
        (
            {**infer_body(), "outputs": [{"name": "NOPE"}]},
            400,
            "unexpected inference output 'NOPE' for model 'echo'",
        ),
    ],
)
def test_requests_that_do_not_fit_the_config(
    echo_repo: Path, body: dict[str, Any], status: int, error: str
) -> None:
    triton = TritonContainer(echo_repo)
    try:
        assert worker_call(triton, "/v2/models/echo/infer", body) == (status, {"error": error})
    finally:
        triton.close()


def test_batched_models_take_the_batch_dimension(tmp_path: Path) -> None:
    triton = TritonContainer(make_repo(tmp_path, "batched", ECHO, max_batch_size=4))
    body = {
        "inputs": [{"name": "IN", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]
    }
    too_big = {"inputs": [{"name": "IN", "shape": [5, 2], "datatype": "FP32", "data": [0] * 10}]}
    try:
        status, doc = worker_call(triton, "/v2/models/batched/infer", body)
        big_status, big = worker_call(triton, "/v2/models/batched/infer", too_big)
        _, meta = worker_call(triton, "/v2/models/batched", method="GET")
    finally:
        triton.close()
    assert status == 200
    assert doc["outputs"][0]["shape"] == [2, 2]
    assert doc["outputs"][0]["data"] == [2.0, 4.0, 6.0, 8.0]
    assert big_status == 400
    assert big["error"].endswith("inference request batch-size must be <= 4 for 'batched'")
    assert meta["inputs"] == [{"name": "IN", "datatype": "FP32", "shape": [-1, 2]}]


def test_health_and_metadata_endpoints(echo_repo: Path) -> None:
    triton = TritonContainer(echo_repo)
    try:
        assert triton.health("/v2/health/ready", 8000) == 200
        assert triton.health("/v2/health/live", 8000) == 200
        assert triton.health("/v2/models/echo/ready", 8000) == 200
        assert triton.health("/v2/models/nope/ready", 8000) == 400
        assert worker_call(triton, "/v2/models/nope/infer", infer_body()) == (
            400,
            {"error": "Request for unknown model: 'nope' is not found"},
        )
        assert worker_call(triton, "/v2/health/ready")[0] == 405
        assert worker_call(triton, "/v2/models/echo/config", method="GET")[1]["name"] == "echo"
        assert worker_call(triton, "/elsewhere", method="GET")[0] == 404
    finally:
        triton.close()
    assert triton.health("/v2/health/ready", 8000) == 400  # unloaded


def test_is_ready_false_keeps_the_function_from_becoming_active(
    nvcf: Emulator, tmp_path: Path
) -> None:
    model = """
    class TritonPythonModel:
        def is_ready(self):
            return False

        def execute(self, requests):
            return []
    """
    triton = TritonContainer(make_repo(tmp_path, "notready", model))
    try:
        with pytest.raises(RuntimeError, match="answered 400"):
            nvcf.add_function(triton, name="n", health_uri="/v2/models/notready/ready")
    finally:
        triton.close()


def test_a_model_that_cannot_load_fails_at_start_up(tmp_path: Path) -> None:
    model = """
    class TritonPythonModel:
        def initialize(self, args):
            raise ValueError("weights missing")
    """
    with pytest.raises(TritonLoadError, match=r"failed to load 'broken' version 1: .*ValueError"):
        TritonContainer(make_repo(tmp_path, "broken", model))
    with pytest.raises(TritonLoadError, match="no models"):
        TritonContainer(tmp_path / "models" / "broken" / "1")


def test_config_pbtxt_reader() -> None:
    config = parse_pbtxt(
        textwrap.dedent(
            """
            # comment
            name: "m"  platform: 'x'
            max_batch_size: 8
            input [ { name: "A" data_type: TYPE_FP32 dims: [ -1, 3 ] reshape: { shape: [ 3 ] } } ]
            output { name: "B", data_type: TYPE_STRING, dims: 1 }
            output < name: "C" dims: [] >
            parameters { key: "K" value: { string_value: "v\\n\\"q\\"" } }
            parameters: [ { key: "L", value: { string_value: "w" } } ]
            dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
            instance_group [ { count: 2, kind: KIND_GPU, gpus: [ 0 ] } ]
            model_transaction_policy { decoupled: false }
            optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "t" } ] } }
            f: 1.5e3
            """
        )
    )
    assert config["name"] == "m" and config["platform"] == "x" and config["max_batch_size"] == 8
    assert config["input"] == [
        {"name": "A", "data_type": "TYPE_FP32", "dims": [-1, 3], "reshape": {"shape": [3]}}
    ]
    assert config["output"] == [
        {"name": "B", "data_type": "TYPE_STRING", "dims": [1]},
        {"name": "C", "dims": []},
    ]
    assert config["parameters"] == {"K": {"string_value": 'v\n"q"'}, "L": {"string_value": "w"}}
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert config["instance_group"] == [{"count": 2, "kind": "KIND_GPU", "gpus": [0]}]
    assert config["model_transaction_policy"] == {"decoupled": False}
    assert config["f"] == 1500.0


# -- nvcf-emulate --function ---------------------------------------------------------------------


@pytest.fixture
def served_triton(tmp_path: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nvcf_emulator.cli",
            "--port",
            "0",
            "--root-dir",
            str(tmp_path / "root"),
            "--inference-url",
            "/v2/models/asset_stats/infer",
            "--function",
            "asset-stats=conftest_examples.triton_model.container:triton",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "*"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        assert lines and "listening on" in lines[-1], lines
        yield lines[-1].rsplit(" ", 1)[1].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_nvcf_emulate_serves_a_triton_container(served_triton: str) -> None:
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": "Bearer nvapi-cli"}
    (fn,) = session.get(f"{served_triton}/v2/nvcf/functions", headers=headers).json()["functions"]
    r = session.post(
        f"{served_triton}/v2/nvcf/pexec/functions/{fn['id']}",
        headers=headers,
        json={"inputs": [{"name": "LABEL", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
    )
    session.close()
    assert r.status_code == 400  # no assets referenced: the model says so
    assert r.json()["detail"].startswith("no input assets")


# -- pb_utils and helpers as a model uses them ---------------------------------------------------


def test_pb_utils_helpers() -> None:
    import numpy as np

    from nvcf_emulator.triton import helpers, pb_utils

    with pytest.raises(pb_utils.TritonModelException, match=r"Please use np\.object_"):
        pb_utils.Tensor("S", np.array(["text"]))
    strings = np.array([b"a", b"bc", "d\u00e9"], dtype=np.object_)
    packed = pb_utils.serialize_byte_tensor(strings)
    assert isinstance(packed, bytes)
    assert list(pb_utils.deserialize_bytes_tensor(packed)) == [b"a", b"bc", "d\u00e9".encode()]
    assert pb_utils.triton_string_to_numpy("TYPE_FP16") is np.float16
    assert pb_utils.numpy_to_triton_type(np.int64) == 9
    assert pb_utils.triton_to_numpy_type(13) is np.object_
    tensor = pb_utils.Tensor("X", np.zeros((2, 3), dtype=np.float32))
    assert (tensor.name(), tensor.shape(), tensor.triton_dtype()) == ("X", [2, 3], 11)
    response = pb_utils.InferenceResponse([tensor])
    assert pb_utils.get_output_tensor_by_name(response, "X") is tensor
    assert pb_utils.get_output_tensor_by_name(response, "Y") is None
    config = {"input": [{"name": "A", "data_type": "TYPE_INT8"}], "output": []}
    assert pb_utils.get_input_config_by_name(config, "A") == config["input"][0]
    assert pb_utils.get_output_config_by_name(config, "A") is None
    with pytest.raises(pb_utils.TritonModelException, match="BLS"):
        pb_utils.InferenceRequest(model_name="other", inputs=[tensor]).exec()
    with pytest.raises(RuntimeError, match="only works while a request runs"):
        helpers.get_input_path()
    params = {"nvcf-reqid": "r", "NVCF-Function-Asset-Ids": "a,b"}
    assert helpers.get_input_path(params) == "/var/inf/inputAssets/r"
    assert helpers.get_output_path(json.dumps(params)) == "/var/inf/response/r"
    assert helpers.get_asset_ids(params) == ["a", "b"]
    assert helpers.get_max_msg_size({}) == 5_000_000


def test_auto_complete_config_completes_the_model_config(tmp_path: Path) -> None:
    model = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            config.add_output({"name": "EXTRA", "data_type": "TYPE_INT32", "dims": [1]})
            config.set_max_batch_size(0)
            return config

        def initialize(self, args):
            self.config = __import__("json").loads(args["model_config"])

        def execute(self, requests):
            dtype = pb_utils.triton_string_to_numpy(
                pb_utils.get_output_config_by_name(self.config, "EXTRA")["data_type"])
            return [pb_utils.InferenceResponse([pb_utils.Tensor("EXTRA", np.array([7], dtype))])]
    """
    triton = TritonContainer(make_repo(tmp_path, "auto", model))
    try:
        status, doc = worker_call(triton, "/v2/models/auto/infer", infer_body())
    finally:
        triton.close()
    assert status == 200
    assert doc["outputs"] == [{"name": "EXTRA", "datatype": "INT32", "shape": [1], "data": [7]}]


def test_parameter_case_lower_gives_lower_cased_names(echo_repo: Path) -> None:
    triton = TritonContainer(echo_repo, parameter_case="lower")
    try:
        _, doc = worker_call(
            triton,
            "/v2/models/echo/infer",
            infer_body(),
            {"NVCF-REQID": "r", "NVCF-ASSET-DIR": "/d"},
        )
    finally:
        triton.close()
    assert seen(doc)["parameters"] == {"nvcf-reqid": "r", "nvcf-asset-dir": "/d"}
    assert seen(doc)["input_path"] == "/d"  # helpers match names case-insensitively
    with pytest.raises(ValueError, match="parameter_case"):
        TritonContainer(echo_repo, parameter_case="upper")  # type: ignore[arg-type]


def test_output_datatype_is_the_arrays_not_the_configs(tmp_path: Path) -> None:
    model = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            x = pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x.astype(np.float64))])]
    """
    triton = TritonContainer(make_repo(tmp_path, "f64", model))
    try:
        status, doc = worker_call(triton, "/v2/models/f64/infer", infer_body())
    finally:
        triton.close()
    assert status == 200  # config.pbtxt says TYPE_FP32; Triton answers what the model made
    assert doc["outputs"] == [{"name": "OUT", "datatype": "FP64", "shape": [2], "data": [1.0, 2.0]}]
