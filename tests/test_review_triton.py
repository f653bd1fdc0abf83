"""Adversarial review of TritonContainer against real Triton (KServe v2 HTTP/JSON) behaviour.

References: triton-inference-server/server src/http_server.cc (JSON parsing, HttpCodeFromError)
and triton-inference-server/core src/infer_request.cc (input validation).
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.datastructures import Headers

from nvcf_emulator.triton import TritonContainer, TritonLoadError
from nvcf_emulator.worker.containers import ContainerRequest

from .conftest import Api

ONE_IN = """
name: "{name}"
backend: "python"
max_batch_size: {mbs}
input [ {{ name: "IN", data_type: {dtype}, dims: [ {dims} ] }} ]
output [ {{ name: "OUT", data_type: {dtype}, dims: [ {dims} ] }} ]
"""

# Echoes IN back as OUT (same dtype), and the request parameters as a response parameter.
IDENTITY = """
import json
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x)]))
        return out
"""


def write_model(repo: Path, name: str, config: str, model_py: str) -> Path:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(textwrap.dedent(config))
    (repo / name / "1" / "model.py").write_text(textwrap.dedent(model_py))
    return repo


def one_in_repo(
    tmp: Path,
    name: str,
    model_py: str = IDENTITY,
    *,
    dtype: str = "TYPE_FP32",
    dims: str = "2",
    mbs: int = 0,
) -> Path:
    config = ONE_IN.format(name=name, dtype=dtype, dims=dims, mbs=mbs)
    return write_model(tmp / "models", name, config, model_py)


@pytest.fixture
def container_of() -> Iterator[Any]:
    made: list[TritonContainer] = []

    def make(repo: Path, **kwargs: Any) -> TritonContainer:
        t = TritonContainer(repo, **kwargs)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def call(
    container: TritonContainer,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    resp = container.invoke(ContainerRequest(method, path, Headers(headers or {}), data))
    content = resp.read()
    return resp.status, json.loads(content) if content else None


def tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


# -- datatypes -------------------------------------------------------------------------------


def test_fp16_input_via_json_is_refused_as_triton_does(tmp_path: Path, container_of: Any) -> None:
    # http_server.cc ReadDataFromJson: FP16 has no JSON form -> INVALID_ARG (400).
    t = container_of(one_in_repo(tmp_path, "half", dtype="TYPE_FP16"))
    status, doc = call(
        t, "/v2/models/half/infer", {"inputs": [tensor("IN", [2], "FP16", [1.0, 2.0])]}
    )
    assert (status, doc) == (
        400,
        {
            "error": "receiving FP16 data via JSON is not supported. Please use the binary "
            "data format for input IN"
        },
    )


def test_fp16_output_via_json_is_refused_as_triton_does(tmp_path: Path, container_of: Any) -> None:
    model = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            x = pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x.astype(np.float16))])]
    """
    t = container_of(one_in_repo(tmp_path, "halfout", model))
    status, doc = call(
        t, "/v2/models/halfout/infer", {"inputs": [tensor("IN", [2], "FP32", [1.0, 2.0])]}
    )
    # http_server.cc WriteDataToJson: FP16 output -> INVALID_ARG -> 400.
    assert status == 400
    assert doc == {
        "error": "sending FP16 data via JSON is not supported. Please use the binary data "
        "format for output"
    }


def test_bf16_input_via_json_is_a_400(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "bf", dtype="TYPE_BF16"))
    status, doc = call(t, "/v2/models/bf/infer", {"inputs": [tensor("IN", [2], "BF16", [1, 2])]})
    assert status == 400
    assert "BF16" in doc["error"]


def test_wrong_datatype_is_400_with_tritons_message(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "dt"))
    status, doc = call(
        t,
        "/v2/models/dt/infer",
        {"id": "r1", "inputs": [tensor("IN", [2], "INT32", [1, 2])]},
    )
    assert (status, doc) == (
        400,
        {
            "error": "[request id: r1] inference input 'IN' data-type is 'INT32', but model "
            "'dt' expects 'FP32'"
        },
    )


def test_unknown_datatype_is_400(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "dt"))
    for datatype in ("fp32", "FLOAT", "", None):
        status, doc = call(
            t, "/v2/models/dt/infer", {"inputs": [tensor("IN", [2], datatype, [1, 2])]}
        )  # type: ignore[arg-type]
        assert status == 400, (datatype, doc)
        assert set(doc) == {"error"}


def test_bytes_round_trip_unicode_and_empty_strings(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "txt", dtype="TYPE_STRING", dims="-1"))
    values = ["héllo ✓", "", "猫", "a\u0000b"]
    status, doc = call(t, "/v2/models/txt/infer", {"inputs": [tensor("IN", [4], "BYTES", values)]})
    assert status == 200, doc
    assert doc["outputs"] == [{"name": "OUT", "datatype": "BYTES", "shape": [4], "data": values}]


def test_integer_and_bool_types_round_trip(tmp_path: Path, container_of: Any) -> None:
    cases = [
        ("TYPE_INT64", "INT64", [2**62, -(2**62)]),
        ("TYPE_UINT64", "UINT64", [2**64 - 1, 0]),
        ("TYPE_INT8", "INT8", [-128, 127]),
        ("TYPE_BOOL", "BOOL", [True, False]),
        ("TYPE_FP64", "FP64", [0.1, -1e300]),
    ]
    for i, (config_type, datatype, data) in enumerate(cases):
        name = f"m{i}"
        t = container_of(one_in_repo(tmp_path / name, name, dtype=config_type))
        status, doc = call(
            t, f"/v2/models/{name}/infer", {"inputs": [tensor("IN", [2], datatype, data)]}
        )
        assert status == 200, (datatype, doc)
        assert doc["outputs"][0] == {
            "name": "OUT",
            "datatype": datatype,
            "shape": [2],
            "data": data,
        }


# -- shapes and data -----------------------------------------------------------------------------


@pytest.mark.parametrize("data", [[1.0], [1.0, 2.0, 3.0]])
def test_data_length_not_matching_shape_is_internal_in_triton(
    tmp_path: Path, container_of: Any, data: list[float]
) -> None:
    # http_server.cc ReadDataFromJson(Helper): TRITONSERVER_ERROR_INTERNAL -> HTTP 500,
    # message "Unable to parse 'data': Shape does not match true shape of 'data' field".
    t = container_of(one_in_repo(tmp_path, "len"))
    status, doc = call(t, "/v2/models/len/infer", {"inputs": [tensor("IN", [2], "FP32", data)]})
    assert status == 500, doc
    assert doc["error"].startswith("Unable to parse 'data'")


@pytest.mark.parametrize(
    ("dtype", "datatype", "data"),
    [
        ("TYPE_FP32", "FP32", ["a", "b"]),
        ("TYPE_INT32", "INT32", [1.5, 2]),
        ("TYPE_BOOL", "BOOL", [1, 0]),
        ("TYPE_STRING", "BYTES", [1, 2]),
    ],
)
def test_wrongly_typed_json_values_are_internal_in_triton(
    tmp_path: Path, container_of: Any, dtype: str, datatype: str, data: list[Any]
) -> None:
    # TritonJson As*() failures are TRITONSERVER_ERROR_INTERNAL in http_server.cc
    # (TRITONJSON_STATUSRETURN), wrapped as "Unable to parse 'data': ..." -> HTTP 500.
    t = container_of(one_in_repo(tmp_path, "typ", dtype=dtype))
    status, doc = call(t, "/v2/models/typ/infer", {"inputs": [tensor("IN", [2], datatype, data)]})
    assert status == 500, doc
    assert doc["error"].startswith("Unable to parse 'data'")


def test_nested_data_is_flattened_row_major(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "mat", dims="2, 3"))
    status, doc = call(
        t,
        "/v2/models/mat/infer",
        {"inputs": [tensor("IN", [2, 3], "FP32", [[1, 2, 3], [4, 5, 6]])]},
    )
    assert status == 200, doc
    assert doc["outputs"][0]["shape"] == [2, 3]
    assert doc["outputs"][0]["data"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]


def test_missing_data_field_is_400(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "nodata"))
    status, doc = call(
        t, "/v2/models/nodata/infer", {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32"}]}
    )
    assert status == 400
    assert set(doc) == {"error"}


@pytest.mark.parametrize("shape", [[-1], [2.0], ["2"], None, [True, True]])
def test_unparseable_shapes_are_400(tmp_path: Path, container_of: Any, shape: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "shp"))
    status, doc = call(t, "/v2/models/shp/infer", {"inputs": [tensor("IN", shape, "FP32", [1, 2])]})
    assert status == 400, doc


def test_wrong_rank_is_400_with_expected_shape(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "rank"))
    status, doc = call(
        t, "/v2/models/rank/infer", {"inputs": [tensor("IN", [1, 2], "FP32", [[1, 2]])]}
    )
    assert (status, doc) == (
        400,
        {
            "error": "[request id: <id_unknown>] unexpected shape for input 'IN' for model "
            "'rank'. Expected [2], got [1,2]. "
        },
    )


def test_variable_dims_accept_any_length(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "var", dims="-1"))
    for n in (1, 5):
        status, doc = call(
            t, "/v2/models/var/infer", {"inputs": [tensor("IN", [n], "FP32", [0.5] * n)]}
        )
        assert status == 200, doc
        assert doc["outputs"][0]["shape"] == [n]
    status, doc = call(
        t, "/v2/models/var/infer", {"inputs": [tensor("IN", [2, 2], "FP32", [1, 2, 3, 4])]}
    )
    assert status == 400
    assert "Expected [-1], got [2,2]" in doc["error"]


def test_batched_model_needs_batch_dim_and_reports_it(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "bat", dims="-1", mbs=8))
    status, doc = call(t, "/v2/models/bat/infer", {"inputs": [tensor("IN", [], "FP32", [1])]})
    assert (status, doc) == (
        400,
        {
            "error": "[request id: <id_unknown>] input 'IN' has no shape but model requires "
            "batch dimension for 'bat'"
        },
    )
    status, doc = call(
        t, "/v2/models/bat/infer", {"inputs": [tensor("IN", [3, 2], "FP32", [1] * 6)]}
    )
    assert status == 200, doc
    assert doc["outputs"][0]["shape"] == [3, 2]
    status, meta = call(t, "/v2/models/bat", method="GET")
    assert status == 200
    assert meta["inputs"] == [{"name": "IN", "datatype": "FP32", "shape": [-1, -1]}]


def test_batch_sizes_of_inputs_must_agree(tmp_path: Path, container_of: Any) -> None:
    config = """
    name: "pair"
    backend: "python"
    max_batch_size: 4
    input [ { name: "A", data_type: TYPE_FP32, dims: [ 1 ] },
            { name: "B", data_type: TYPE_FP32, dims: [ 1 ] } ]
    output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
    """
    model = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            a = pb_utils.get_input_tensor_by_name(requests[0], "A").as_numpy()
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", a)])]
    """
    t = container_of(write_model(tmp_path / "models", "pair", config, model))
    status, doc = call(
        t,
        "/v2/models/pair/infer",
        {
            "inputs": [
                tensor("A", [2, 1], "FP32", [1, 2]),
                tensor("B", [3, 1], "FP32", [1, 2, 3]),
            ]
        },
    )
    # infer_request.cc Normalize(): INVALID_ARG "... batch size does not match other inputs".
    assert status == 400, doc
    assert "batch size does not match other inputs for 'pair'" in doc["error"]


def test_duplicate_input_is_refused(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "dup"))
    status, doc = call(
        t,
        "/v2/models/dup/infer",
        {"inputs": [tensor("IN", [2], "FP32", [1, 2]), tensor("IN", [2], "FP32", [3, 4])]},
    )
    # infer_request.cc AddOriginalInput(): INVALID_ARG "input 'IN' already exists in request".
    assert status == 400, doc
    assert doc["error"].endswith("input 'IN' already exists in request")


def test_optional_inputs(tmp_path: Path, container_of: Any) -> None:
    config = """
    name: "opt"
    backend: "python"
    max_batch_size: 0
    input [ { name: "A", data_type: TYPE_FP32, dims: [ 1 ] },
            { name: "B", data_type: TYPE_FP32, dims: [ 1 ], optional: true } ]
    output [ { name: "OUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
    """
    model = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            a = pb_utils.get_input_tensor_by_name(requests[0], "A").as_numpy()
            b = pb_utils.get_input_tensor_by_name(requests[0], "B")
            extra = b.as_numpy() if b is not None else np.zeros(1, np.float32)
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", a + extra)])]
    """
    t = container_of(write_model(tmp_path / "models", "opt", config, model))
    only_a = call(t, "/v2/models/opt/infer", {"inputs": [tensor("A", [1], "FP32", [1])]})
    both = call(
        t,
        "/v2/models/opt/infer",
        {"inputs": [tensor("A", [1], "FP32", [1]), tensor("B", [1], "FP32", [2])]},
    )
    only_b = call(t, "/v2/models/opt/infer", {"inputs": [tensor("B", [1], "FP32", [2])]})
    assert only_a[0] == 200 and only_a[1]["outputs"][0]["data"] == [1.0]
    assert both[0] == 200 and both[1]["outputs"][0]["data"] == [3.0]
    assert only_b == (
        400,
        {
            "error": "[request id: <id_unknown>] expected number of inputs between 1 and 2 but "
            "got 1 inputs for model 'opt'. Got input(s) ['B'], but missing required input(s) "
            "['A']. Please provide all required input(s)."
        },
    )


def test_empty_batch_does_not_crash_the_server(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "empty", dims="2", mbs=4))
    status, doc = call(t, "/v2/models/empty/infer", {"inputs": [tensor("IN", [0, 2], "FP32", [])]})
    assert status in (200, 400), doc
    if status == 200:
        assert doc["outputs"][0]["shape"] == [0, 2]
        assert doc["outputs"][0]["data"] == []


def test_malformed_bodies_are_400(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "bad"))
    for raw in (b"", b"{", b"[]", b'"x"', b"\xff\xfe", b'{"inputs": {}}', b'{"inputs": [1]}'):
        status, doc = call(t, "/v2/models/bad/infer", raw=raw)
        assert status == 400, (raw, doc)
        assert set(doc) == {"error"}
    status, doc = call(t, "/v2/models/bad/infer", raw=b"{")
    assert doc["error"].startswith("failed to parse the request JSON buffer")


def test_binary_extension_header_is_refused_not_misread(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "bin"))
    header = json.dumps(
        {"inputs": [{"name": "IN", "shape": [2], "datatype": "FP32", "parameters": {}}]}
    ).encode()
    status, doc = call(
        t,
        "/v2/models/bin/infer",
        raw=header + b"\x00" * 3,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert status == 400
    assert set(doc) == {"error"}


def test_requested_outputs_and_request_id(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "ids"))
    status, doc = call(
        t,
        "/v2/models/ids/versions/1/infer",
        {
            "id": "my-id",
            "inputs": [tensor("IN", [2], "FP32", [1, 2])],
            "outputs": [{"name": "OUT"}],
        },
    )
    assert status == 200, doc
    assert doc == {
        "model_name": "ids",
        "model_version": "1",
        "id": "my-id",
        "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}],
    }


# -- misbehaving models ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (
            "(pb_utils.InferenceResponse([]),)",
            "Expected a list in the execute return, found type '<class 'tuple'>'.",
        ),
        (
            "[pb_utils.InferenceResponse([]), pb_utils.InferenceResponse([])]",
            "Number of InferenceResponse objects do not match the number of InferenceRequest "
            "objects. InferenceRequest(s) size is:1, and InferenceResponse(s) size is:2",
        ),
        (
            "[pb_utils.TritonError('x')]",
            "Expected an 'InferenceResponse' object in the execute function return list, "
            "found type '<class 'triton_python_backend_utils.TritonError'>'.",
        ),
    ],
)
def test_execute_returning_the_wrong_thing(
    tmp_path: Path, container_of: Any, returned: str, message: str
) -> None:
    model = f"""
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return {returned}
    """
    t = container_of(one_in_repo(tmp_path, "wrong", model))
    status, doc = call(t, "/v2/models/wrong/infer", {"inputs": [tensor("IN", [2], "FP32", [1, 2])]})
    assert status == 500
    prefix = "Failed to process the request(s) for model 'wrong_0_0', message: "
    assert doc["error"].startswith(prefix), doc
    # the class path of the stand-in may differ; the gist must be there
    assert message.split("found type")[0] in doc["error"]


def test_execute_raising_is_500_with_exception_and_traceback(
    tmp_path: Path, container_of: Any
) -> None:
    model = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            raise pb_utils.TritonModelException("kaput")
    """
    t = container_of(one_in_repo(tmp_path, "raiser", model))
    status, doc = call(
        t, "/v2/models/raiser/infer", {"inputs": [tensor("IN", [2], "FP32", [1, 2])]}
    )
    assert status == 500
    assert doc["error"].startswith(
        "Failed to process the request(s) for model 'raiser_0_0', message: "
        "TritonModelException: kaput"
    )
    # the server survives and keeps answering
    status, _ = call(t, "/v2/models/raiser/infer", {"inputs": [tensor("IN", [2], "FP32", [1, 2])]})
    assert status == 500
    assert t.health("/v2/health/ready", 8000) == 200


def test_triton_error_default_code_is_internal(tmp_path: Path, container_of: Any) -> None:
    model = """
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError("nope"))]
    """
    t = container_of(one_in_repo(tmp_path, "terr", model))
    assert call(t, "/v2/models/terr/infer", {"inputs": [tensor("IN", [2], "FP32", [1, 2])]}) == (
        500,
        {"error": "nope"},
    )


def test_output_with_unsupported_dtype_is_500_not_a_crash(
    tmp_path: Path, container_of: Any
) -> None:
    model = """
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", np.array([1j, 2j]))])]
    """
    t = container_of(one_in_repo(tmp_path, "cplx", model))
    status, doc = call(t, "/v2/models/cplx/infer", {"inputs": [tensor("IN", [2], "FP32", [1, 2])]})
    assert status in (400, 500)
    assert set(doc) == {"error"}


def test_initialize_raising_fails_load_and_finalizes_loaded_models(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    good = f"""
    class TritonPythonModel:
        def initialize(self, args):
            open({str(log)!r}, "a").write("init a\\n")

        def finalize(self):
            open({str(log)!r}, "a").write("fini a\\n")

        def execute(self, requests):
            return []
    """
    bad = """
    class TritonPythonModel:
        def initialize(self, args):
            raise ValueError("no weights")

        def execute(self, requests):
            return []
    """
    repo = one_in_repo(tmp_path, "a_good", good)
    write_model(repo, "b_bad", ONE_IN.format(name="b_bad", dtype="TYPE_FP32", dims="2", mbs=0), bad)
    with pytest.raises(TritonLoadError) as info:
        TritonContainer(repo)
    assert "failed to load 'b_bad' version 1" in str(info.value)
    assert "ValueError: no weights" in str(info.value)
    assert log.read_text() == "init a\nfini a\n"


def test_unknown_version_and_model(tmp_path: Path, container_of: Any) -> None:
    t = container_of(one_in_repo(tmp_path, "v"))
    body = {"inputs": [tensor("IN", [2], "FP32", [1, 2])]}
    assert call(t, "/v2/models/v/versions/1/infer", body)[0] == 200
    status, doc = call(t, "/v2/models/v/versions/7/infer", body)
    assert status == 400 and set(doc) == {"error"}
    status, doc = call(t, "/v2/models/v/infer", body, method="GET")
    assert status == 405


# -- concurrency -------------------------------------------------------------------------------


def test_many_concurrent_direct_calls_keep_requests_apart(
    tmp_path: Path, container_of: Any
) -> None:
    model = """
    import json
    import time
    import numpy as np
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def initialize(self, args):
            self.active = 0
            self.peak = 0

        def execute(self, requests):
            self.active += 1
            self.peak = max(self.peak, self.active)
            time.sleep(0.002)
            params = json.loads(requests[0].parameters())
            x = pb_utils.get_input_tensor_by_name(requests[0], "IN").as_numpy()
            self.active -= 1
            resp = pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", x * 2)],
                parameters={"peak": self.peak, "tag": params.get("NVCF-TAG", "")},
            )
            return [resp]
    """
    t = container_of(one_in_repo(tmp_path, "conc", model))

    def one(i: int) -> tuple[int, Any]:
        return call(
            t,
            "/v2/models/conc/infer",
            {"inputs": [tensor("IN", [2], "FP32", [i, -i])]},
            headers={"NVCF-TAG": f"t{i}"},
        )

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(48)))
    for i, (status, doc) in enumerate(results):
        assert status == 200, doc
        assert doc["outputs"][0]["data"] == [2.0 * i, -2.0 * i]
        assert doc["parameters"]["tag"] == f"t{i}"
        assert doc["parameters"]["peak"] == 1  # models run one at a time


# -- through NVCF pexec --------------------------------------------------------------------------


def test_pexec_success_error_and_concurrency(api: Api, tmp_path: Path) -> None:
    model = """
    import json
    import triton_python_backend_utils as pb_utils

    class TritonPythonModel:
        def execute(self, requests):
            r = requests[0]
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            if float(x[0]) < 0:
                err = pb_utils.TritonError("negative", pb_utils.TritonError.INVALID_ARG)
                return [pb_utils.InferenceResponse(error=err)]
            reqid = json.loads(r.parameters())["NVCF-REQID"]
            return [pb_utils.InferenceResponse([pb_utils.Tensor("OUT", x + 1)],
                                               parameters={"reqid": reqid})]
    """
    triton = TritonContainer(one_in_repo(tmp_path, "px", model))
    try:
        fid, _ = api.emulator.add_function(triton, name="px", inference_url="/v2/models/px/infer")
        url = f"{api.base_url}/v2/nvcf/pexec/functions/{fid}"

        def post(body: Any) -> requests.Response:
            return requests.post(url, json=body, headers=api.headers, timeout=10)

        ok = post({"inputs": [tensor("IN", [2], "FP32", [1, 2])]})
        assert ok.status_code == 200, ok.text
        assert ok.headers["NVCF-STATUS"] == "fulfilled"
        reqid = ok.headers["NVCF-REQID"]
        assert ok.json()["outputs"][0]["data"] == [2.0, 3.0]
        assert ok.json()["parameters"] == {"reqid": reqid}

        bad_shape = post({"inputs": [tensor("IN", [3], "FP32", [1, 2, 3])]})
        assert bad_shape.status_code == 400
        assert bad_shape.headers["NVCF-REQID"]
        assert bad_shape.json()["detail"] == (
            "[request id: <id_unknown>] unexpected shape for input 'IN' for model 'px'. "
            "Expected [2], got [3]. "
        )

        neg = post({"inputs": [tensor("IN", [2], "FP32", [-1, 2])]})
        assert neg.status_code == 400
        assert neg.json()["detail"] == "negative"

        lock = threading.Lock()
        seen: list[str] = []

        def one(i: int) -> None:
            r = post({"inputs": [tensor("IN", [2], "FP32", [i, i])]})
            assert r.status_code == 200, r.text
            assert r.json()["outputs"][0]["data"] == [i + 1.0, i + 1.0]
            assert r.json()["parameters"]["reqid"] == r.headers["NVCF-REQID"]
            with lock:
                seen.append(r.headers["NVCF-REQID"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(16)))
        assert len(set(seen)) == 16
    finally:
        triton.close()
