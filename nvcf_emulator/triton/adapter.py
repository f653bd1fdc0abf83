"""A Triton Inference Server container with Python-backend models, for the emulated worker.

``TritonContainer("model_repository")`` loads every ``<repo>/<model>/config.pbtxt`` +
``<repo>/<model>/<version>/model.py`` (``TritonPythonModel``) as ``tritonserver`` does at start-up,
then answers the worker over the KServe v2 HTTP/JSON protocol:

- ``POST /v2/models/{name}[/versions/{v}]/infer`` — JSON tensors in, JSON tensors out
- ``GET /v2/health/live``, ``GET /v2/health/ready`` (NVCF's default health URI),
  ``GET /v2/models/{name}[/versions/{v}]/ready`` (calls the model's ``is_ready()`` if it has one)
- ``GET /v2``, ``GET /v2/models/{name}``, ``GET /v2/models/{name}/config``

Headers reach the model only as ``tritonserver --http-header-forward-pattern`` lets them: a header
whose name the pattern matches becomes a string request parameter (``request.parameters()``).
As in Triton's source (``RE2::PartialMatch`` with ``(?i)`` prepended by the command-line parser),
the pattern is searched anywhere in the name and case-insensitively; a leading ``(?-i)`` makes it
case-sensitive. ``forward_pattern=None`` forwards nothing (Triton's default), so a model that
needs ``NVCF-ASSET-DIR`` fails here as it would in production.

Errors answer as Triton does: ``{"error": "..."}`` with 400 for bad requests,
500 ``Failed to process the request(s) for model '<instance>', message: ...`` when ``execute``
raises, and the status of a ``TritonError`` code for a response's error. Not emulated: dynamic
batching (each ``execute`` gets one request), decoupled models, BLS, binary tensor data,
shared memory, ensembles and non-Python backends.

Models run one at a time in the whole process (one lock), because the
``triton_python_backend_utils`` stand-in, ``sys.path`` and ``NVCF_ASSET_ID`` are put in place
only while a model runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ..worker.containers import ContainerRequest, ContainerResponse
from . import helpers, pb_utils
from .config import ConfigError, model_config

#: Triton's default forward pattern for NVCF (the docs require ``--http-header-forward-pattern
#: NVCF-.*``).
DEFAULT_FORWARD_PATTERN = r"NVCF-.*"

#: Parameter names Triton refuses to take from a header (``kReservedParameterKeys``).
RESERVED_PARAMETERS = frozenset(
    {
        "sequence_id",
        "sequence_start",
        "sequence_end",
        "priority",
        "timeout",
        "headers",
        "binary_data_output",
    }
)

# KServe datatype <-> numpy dtype <-> config data_type.
_DATATYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

# HTTP status for TRITONSERVER_Error codes (http_server.cc HttpCodeFromError).
_STATUS_FOR_CODE = {
    pb_utils.TritonError.INTERNAL: 500,
    pb_utils.TritonError.NOT_FOUND: 404,
    pb_utils.TritonError.UNAVAILABLE: 503,
    pb_utils.TritonError.UNSUPPORTED: 501,
}

_PATH = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<action>/infer|/ready|/config)?/?$"
)

# One lock for every model in the process: see the module docstring.
_RUN_LOCK = threading.RLock()
_MODULE_IDS = itertools.count()


class TritonLoadError(RuntimeError):
    """A model could not be loaded (``tritonserver`` would exit at start-up)."""


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def compile_forward_pattern(pattern: str | None) -> re.Pattern[str] | None:
    """``--http-header-forward-pattern`` as Triton applies it: searched, case-insensitive
    unless the pattern starts with ``(?-i)``."""
    if not pattern:
        return None
    if pattern.startswith("(?-i)"):
        return re.compile(pattern[len("(?-i)") :])
    return re.compile(pattern, re.IGNORECASE)


def protocol_datatype(data_type: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; ``TYPE_STRING`` -> ``BYTES``."""
    name = data_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


@dataclass
class _Model:
    name: str
    version: str
    directory: Path
    version_dir: Path
    config: dict[str, Any]
    module: ModuleType
    instance: Any
    module_name: str
    loaded: bool = True
    extra_modules: list[str] = field(default_factory=list)

    @property
    def instance_name(self) -> str:
        return f"{self.name}_0_0"


@contextmanager
def _model_scope(
    model_dir: Path | None, parameters: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """Hold the lock; make the stand-in importable, the version dir importable, set the env."""
    with _RUN_LOCK:
        saved = {
            name: sys.modules.get(name)
            for name in ("triton_python_backend_utils", "triton_python_backend_utils.helpers")
        }
        sys.modules["triton_python_backend_utils"] = pb_utils
        sys.modules["triton_python_backend_utils.helpers"] = helpers
        added_path = str(model_dir) if model_dir is not None else None
        if added_path is not None:
            sys.path.insert(0, added_path)
        saved_asset_env = os.environ.get("NVCF_ASSET_ID")
        saved_params = helpers._current
        if parameters is not None:
            helpers._current = dict(parameters)
            first = helpers.get_asset_ids(dict(parameters))[0]
            if first:
                os.environ["NVCF_ASSET_ID"] = first
            else:
                os.environ.pop("NVCF_ASSET_ID", None)
        try:
            yield
        finally:
            helpers._current = saved_params
            if saved_asset_env is None:
                os.environ.pop("NVCF_ASSET_ID", None)
            else:
                os.environ["NVCF_ASSET_ID"] = saved_asset_env
            if added_path is not None:
                with suppress(ValueError):
                    sys.path.remove(added_path)
            for name, module in saved.items():
                if module is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = module


def _python_error(exc: BaseException) -> str:
    """An exception as pybind11's ``error_already_set::what()`` renders it."""
    frames = [
        f"  {frame.filename}({frame.lineno}): {frame.name}"
        for frame in reversed(traceback.extract_tb(exc.__traceback__))
        if Path(frame.filename).resolve() != Path(__file__).resolve()
    ]
    text = f"{type(exc).__name__}: {exc}"
    if frames:
        text += "\n\nAt:\n" + "\n".join(frames) + "\n"
    return text


def _inside(filename: str | None, directory: Path) -> bool:
    if not filename:
        return False
    return Path(filename).resolve().is_relative_to(directory.resolve())


def _call(fn: Any, *args: Any) -> Any:
    result = fn(*args)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result


def _json_response(status: int, doc: Any) -> ContainerResponse:
    return ContainerResponse(
        status, json.dumps(doc).encode(), [("Content-Type", "application/json")]
    )


def _error(status: int, message: str) -> ContainerResponse:
    return _json_response(status, {"error": message})


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        out: list[Any] = []
        for item in data:
            out.extend(_flatten(item))
        return out
    return [data]


class TritonContainer:
    """A Triton server with Python-backend models, as an emulator container.

    ``model_repository``: the directory ``tritonserver --model-repository`` would get.
    ``forward_pattern``: ``--http-header-forward-pattern`` (default ``NVCF-.*``, as NVCF
    requires; ``None`` forwards no header). ``models``: load only these model names.
    ``parameter_case``: ``"as-sent"`` gives the model the header names as the worker sent them
    (NVCF's upper case); ``"lower"`` lower-cases them, as they often arrive behind proxies and
    HTTP/2 — use it to prove a model matches names case-insensitively (NVIDIA's helpers do).

    Loading happens here, as at ``tritonserver`` start-up: a model that cannot be loaded raises
    :class:`TritonLoadError`. :meth:`close` calls each model's ``finalize()``.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        forward_pattern: str | None = DEFAULT_FORWARD_PATTERN,
        *,
        models: Iterable[str] | None = None,
        parameter_case: Literal["as-sent", "lower"] = "as-sent",
    ) -> None:
        if parameter_case not in ("as-sent", "lower"):
            raise ValueError(f"parameter_case is 'as-sent' or 'lower', got {parameter_case!r}")
        self.parameter_case = parameter_case
        self.model_repository = Path(model_repository).resolve()
        self.forward_pattern = forward_pattern
        self._forward = compile_forward_pattern(forward_pattern)
        if not self.model_repository.is_dir():
            raise TritonLoadError(f"model repository {self.model_repository} is not a directory")
        if models is None:
            names = sorted(
                p.name for p in self.model_repository.iterdir() if (p / "config.pbtxt").is_file()
            )
        else:
            names = list(models)
        if not names:
            raise TritonLoadError(f"no models (<model>/config.pbtxt) in {self.model_repository}")
        self.models: dict[str, _Model] = {}
        try:
            for name in names:
                self.models[name] = self._load(name)
        except BaseException:
            self.close()
            raise

    # -- loading -----------------------------------------------------------------------------

    def _load(self, name: str) -> _Model:
        directory = self.model_repository / name
        try:
            config = model_config(directory)
        except ConfigError as exc:
            raise TritonLoadError(str(exc)) from exc
        backend = config.get("backend", "python" if "platform" not in config else "")
        if backend != "python":
            raise TritonLoadError(
                f"model '{name}': backend {backend or config.get('platform')!r} is not emulated; "
                'only Python-backend models (backend: "python") are'
            )
        if pb_utils.using_decoupled_model_transaction_policy(config):
            raise TritonLoadError(f"model '{name}': decoupled models are not emulated")
        versions = sorted(
            (int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()),
        )
        if not versions:
            raise TritonLoadError(f"model '{name}': no version directory (e.g. {directory}/1)")
        version = str(versions[-1])  # the default version policy: latest 1
        version_dir = directory / version
        filename = str(config.get("default_model_filename") or "model.py")
        path = version_dir / filename
        if not path.is_file():
            raise TritonLoadError(f"Python model file not found in '{path}'")

        safe_name = re.sub(r"\W", "_", name)
        module_name = f"_nvcf_triton_model_{safe_name}_{next(_MODULE_IDS)}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        before = set(sys.modules)
        sys.modules[module_name] = module
        try:
            with _model_scope(version_dir):
                spec.loader.exec_module(module)
                cls = getattr(module, "TritonPythonModel", None)
                if cls is None:
                    raise TritonLoadError(f"model '{name}': {path} defines no TritonPythonModel")
                auto = getattr(cls, "auto_complete_config", None)
                if auto is not None:
                    completed = auto(pb_utils.ModelConfig(config))
                    config = completed.as_dict()
                instance = cls()
                model = _Model(
                    name, version, directory, version_dir, config, module, instance, module_name
                )
                init = getattr(instance, "initialize", None)
                if init is not None:
                    _call(init, self._initialize_args(model))
        except TritonLoadError:
            sys.modules.pop(module_name, None)
            raise
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise TritonLoadError(
                f"failed to load '{name}' version {version}: Internal: {_python_error(exc)}"
            ) from exc
        # Modules imported from the model's own directory (e.g. a util.py next to model.py) go
        # with the model on close; libraries it imported stay.
        model.extra_modules = sorted(
            name
            for name in set(sys.modules) - before - {module_name}
            if _inside(getattr(sys.modules[name], "__file__", None), directory)
        )
        return model

    def _initialize_args(self, model: _Model) -> dict[str, str]:
        return {
            "model_config": json.dumps(model.config),
            "model_instance_kind": "CPU",
            "model_instance_name": model.instance_name,
            "model_instance_device_id": "0",
            "model_repository": str(model.directory),
            "model_version": model.version,
            "model_name": model.name,
        }

    # -- the Container interface ---------------------------------------------------------------

    def invoke(self, request: ContainerRequest) -> ContainerResponse:
        try:
            return self._route(request.method, request.path.split("?", 1)[0], request)
        except _HttpError as exc:
            return _error(exc.status, exc.message)

    def health(self, uri: str, port: int, timeout: float = 2.0) -> int:
        try:
            return self._route("GET", uri.split("?", 1)[0], None).status
        except _HttpError as exc:
            return exc.status

    def close(self) -> None:
        for model in self.models.values():
            if not model.loaded:
                continue
            model.loaded = False
            finalize = getattr(model.instance, "finalize", None)
            try:
                if finalize is not None:
                    with _model_scope(model.version_dir):
                        _call(finalize)
            finally:
                for name in (model.module_name, *model.extra_modules):
                    sys.modules.pop(name, None)

    def __repr__(self) -> str:
        return (
            f"TritonContainer({str(self.model_repository)!r}, "
            f"forward_pattern={self.forward_pattern!r}, models={list(self.models)!r})"
        )

    # -- routing -------------------------------------------------------------------------------

    def _route(self, method: str, path: str, request: ContainerRequest | None) -> ContainerResponse:
        def need(expected: str) -> None:
            if method.upper() != expected:
                raise _HttpError(405, "Method Not Allowed")

        if path in ("/v2/health/live", "/v2/health/ready"):
            need("GET")
            ready = path.endswith("live") or all(m.loaded for m in self.models.values())
            return ContainerResponse(200 if ready else 400, b"", [])
        if path in ("/v2", "/v2/"):
            need("GET")
            return _json_response(
                200,
                {
                    "name": "triton",
                    "version": "nvcf-emulator",
                    "extensions": ["classification", "model_configuration", "parameters"],
                },
            )
        m = _PATH.match(path)
        if m is None:
            raise _HttpError(404, "Not Found")
        model = self._model(m.group("name"), m.group("version"))
        action = m.group("action")
        if action == "/infer":
            need("POST")
            if request is None:
                raise _HttpError(400, "no request body")
            return self._infer(model, request)
        need("GET")
        if action == "/ready":
            is_ready = getattr(model.instance, "is_ready", None)
            ok = True
            if is_ready is not None:
                try:
                    with _model_scope(model.version_dir):
                        ok = bool(_call(is_ready))
                except Exception:
                    ok = False
            if not ok:
                raise _HttpError(400, "Model version not ready")
            return ContainerResponse(200, b"", [])
        if action == "/config":
            return _json_response(200, model.config)
        return _json_response(
            200,
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "python",
                "inputs": [self._tensor_meta(t, model) for t in model.config["input"]],
                "outputs": [self._tensor_meta(t, model) for t in model.config["output"]],
            },
        )

    @staticmethod
    def _tensor_meta(tensor: Mapping[str, Any], model: _Model) -> dict[str, Any]:
        dims = [int(d) for d in tensor.get("dims", [])]
        if int(model.config.get("max_batch_size", 0)) > 0:
            dims = [-1, *dims]
        return {
            "name": tensor["name"],
            "datatype": protocol_datatype(str(tensor.get("data_type", ""))),
            "shape": dims,
        }

    def _model(self, name: str, version: str | None) -> _Model:
        model = self.models.get(name)
        if model is None or not model.loaded:
            raise _HttpError(400, f"Request for unknown model: '{name}' is not found")
        if version not in (None, "", model.version):
            raise _HttpError(
                400,
                f"Request for unknown model: '{name}' version {version} is not at ready state",
            )
        return model

    # -- inference -----------------------------------------------------------------------------

    def forwarded_parameters(self, request: ContainerRequest) -> dict[str, str]:
        """The headers Triton would forward as request parameters, by its pattern."""
        if self._forward is None:
            return {}
        out: dict[str, str] = {}
        for name, value in request.headers.items():
            if not self._forward.search(name):
                continue
            if name in RESERVED_PARAMETERS or name.startswith("triton_"):
                raise _HttpError(
                    400, f"Header '{name}' is reserved for Triton usage and cannot be forwarded."
                )
            out[name.lower() if self.parameter_case == "lower" else name] = value
        return out

    def _infer(self, model: _Model, request: ContainerRequest) -> ContainerResponse:
        if request.header("Inference-Header-Content-Length") is not None:
            raise _HttpError(
                400,
                "binary tensor data (Inference-Header-Content-Length) is not supported by "
                "the emulator; send JSON 'data'",
            )
        try:
            body = json.loads(request.body or b"")
        except ValueError as exc:
            raise _HttpError(400, f"failed to parse the request JSON buffer: {exc}") from exc
        if not isinstance(body, dict):
            raise _HttpError(400, "failed to parse the request JSON buffer: not an object")
        request_id = str(body.get("id", ""))
        log_request = f"[request id: {request_id or '<id_unknown>'}] "
        parameters: dict[str, Any] = {}
        body_params = body.get("parameters", {})
        if isinstance(body_params, dict):
            parameters.update(body_params)
        parameters.update(self.forwarded_parameters(request))

        inputs = self._inputs(model, body.get("inputs"), log_request)
        requested = self._requested_outputs(model, body.get("outputs"))
        infer_request = pb_utils.InferenceRequest(
            model_name=model.name,
            requested_output_names=requested,
            inputs=inputs,
            request_id=request_id,
            parameters=parameters,
        )
        with _model_scope(model.version_dir, parameters):
            try:
                result = _call(model.instance.execute, [infer_request])
                response = self._single_response(result, infer_request)
            except Exception as exc:
                message = exc.message if isinstance(exc, _HttpError) else _python_error(exc)
                return _error(
                    500,
                    f"Failed to process the request(s) for model '{model.instance_name}', "
                    f"message: {message}",
                )
        error = response.error()
        if error is not None:
            return _error(_STATUS_FOR_CODE.get(error.code(), 400), error.message())
        doc: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
        if request_id:
            doc["id"] = request_id
        response_params = json.loads(response.parameters())
        if response_params:
            doc["parameters"] = response_params
        try:
            doc["outputs"] = [
                self._output_json(tensor)
                for tensor in response.output_tensors()
                if tensor.name() in requested
            ]
        except (TypeError, ValueError) as exc:
            return _error(
                500,
                f"Failed to process the request(s) for model '{model.instance_name}', "
                f"message: {type(exc).__name__}: {exc}",
            )
        return _json_response(200, doc)

    @staticmethod
    def _single_response(
        result: Any, request: pb_utils.InferenceRequest
    ) -> pb_utils.InferenceResponse:
        if result is None:
            sent = request.get_response_sender().responses
            if len(sent) != 1:
                raise _HttpError(
                    500, f"expected one response for the request, the model sent {len(sent)}"
                )
            return sent[0]
        if not isinstance(result, list):
            raise _HttpError(
                500, f"Expected a list in the execute return, found type '{type(result)}'."
            )
        if len(result) != 1:
            raise _HttpError(
                500,
                "Number of InferenceResponse objects do not match the number of "
                f"InferenceRequest objects. InferenceRequest(s) size is:1, and "
                f"InferenceResponse(s) size is:{len(result)}\n",
            )
        response = result[0]
        if not isinstance(response, pb_utils.InferenceResponse):
            raise _HttpError(
                500,
                "Expected an 'InferenceResponse' object in the execute function return list, "
                f"found type '{type(response)}'.",
            )
        return response

    def _requested_outputs(self, model: _Model, outputs: Any) -> list[str]:
        known = [str(t["name"]) for t in model.config["output"]]
        if not outputs:
            return known
        if not isinstance(outputs, list):
            raise _HttpError(400, "Unable to parse 'outputs': not an array")
        names: list[str] = []
        for item in outputs:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise _HttpError(400, "Unable to parse 'name' of an output")
            if name not in known:
                raise _HttpError(
                    400, f"unexpected inference output '{name}' for model '{model.name}'"
                )
            names.append(name)
        return names

    def _inputs(self, model: _Model, raw: Any, log_request: str) -> list[pb_utils.Tensor]:
        if not isinstance(raw, list):
            raise _HttpError(400, "Unable to parse 'inputs': not an array")
        configs = {str(t["name"]): t for t in model.config["input"]}
        batching = int(model.config.get("max_batch_size", 0)) > 0
        tensors: list[pb_utils.Tensor] = []
        batch_sizes: list[tuple[str, int]] = []
        for item in raw:
            if not isinstance(item, dict):
                raise _HttpError(400, "Unable to parse 'inputs': an input is not an object")
            name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
            if not isinstance(name, str):
                raise _HttpError(400, "Unable to parse 'name' of an input")
            if any(t.name() == name for t in tensors):  # infer_request.cc AddOriginalInput
                raise _HttpError(400, f"{log_request}input '{name}' already exists in request")
            if name not in configs:
                raise _HttpError(
                    400, f"unexpected inference input '{name}' for model '{model.name}'"
                )
            if datatype not in _DATATYPES:
                raise _HttpError(400, f"invalid datatype {datatype!r} for input '{name}'")
            if datatype == "FP16":  # http_server.cc ReadDataFromJson: FP16 has no JSON form
                raise _HttpError(
                    400,
                    "receiving FP16 data via JSON is not supported. Please use the binary data "
                    f"format for input {name}",
                )
            if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
            ):
                raise _HttpError(400, f"Unable to parse 'shape' of input '{name}'")
            config = configs[name]
            expected_type = protocol_datatype(str(config.get("data_type", "")))
            if datatype != expected_type:
                raise _HttpError(
                    400,
                    f"{log_request}inference input '{name}' data-type is '{datatype}', but "
                    f"model '{model.name}' expects '{expected_type}'",
                )
            self._check_shape(model, name, shape, config, batching, log_request)
            tensors.append(pb_utils.Tensor(name, self._array(name, datatype, shape, item)))
            if batching:
                batch_sizes.append((name, shape[0]))
        for name, size in batch_sizes[1:]:  # infer_request.cc Normalize
            if size != batch_sizes[0][1]:
                raise _HttpError(
                    400,
                    f"{log_request}input '{name}' batch size does not match other inputs for "
                    f"'{model.name}'",
                )
        given = {t.name() for t in tensors}
        missing = [n for n, c in configs.items() if not c.get("optional") and n not in given]
        if missing:
            got = "[" + ",".join(f"'{t.name()}'" for t in tensors) + "]"
            required = "[" + ",".join(f"'{n}'" for n in missing) + "]"
            optional = any(c.get("optional") for c in configs.values())
            count = (
                f"between {len(configs) - sum(bool(c.get('optional')) for c in configs.values())}"
                f" and {len(configs)}"
                if optional
                else f"{len(configs)} inputs"
            )
            lead = f"expected number of inputs {count}" if optional else f"expected {count}"
            raise _HttpError(
                400,
                f"{log_request}{lead} but got {len(tensors)} inputs for model '{model.name}'. "
                f"Got input(s) {got}, but missing required input(s) {required}. "
                "Please provide all required input(s).",
            )
        return tensors

    @staticmethod
    def _check_shape(
        model: _Model,
        name: str,
        shape: list[int],
        config: Mapping[str, Any],
        batching: bool,
        log_request: str,
    ) -> None:
        dims = [int(d) for d in config.get("dims", [])]
        given = list(shape)
        if batching:
            max_batch = int(model.config["max_batch_size"])
            if not given:
                raise _HttpError(
                    400,
                    f"{log_request}input '{name}' has no shape but model requires batch "
                    f"dimension for '{model.name}'",
                )
            if given[0] > max_batch:
                raise _HttpError(
                    400,
                    f"{log_request}inference request batch-size must be <= {max_batch} for "
                    f"'{model.name}'",
                )
            given = given[1:]
        if len(given) != len(dims) or any(
            d != -1 and d != g for d, g in zip(dims, given, strict=True)
        ):
            full = ([-1] if batching else []) + dims
            note = (
                "NOTE: Setting a non-zero max_batch_size in the model config requires a batch "
                "dimension to be prepended to each input shape. If you want to specify the full "
                "shape including the batch dim in your input dims config, try setting "
                "max_batch_size to zero. See the model configuration docs for more info on "
                "max_batch_size."
                if batching
                else ""
            )
            raise _HttpError(
                400,
                f"{log_request}unexpected shape for input '{name}' for model '{model.name}'. "
                f"Expected [{','.join(map(str, full))}], got [{','.join(map(str, shape))}]. "
                + note,
            )

    @staticmethod
    def _array(name: str, datatype: str, shape: list[int], item: Mapping[str, Any]) -> Any:
        if "data" not in item:
            raise _HttpError(400, f"must specify valid 'data' field for input '{name}'")
        data = _flatten(item["data"])
        expected = int(np.prod(shape)) if shape else 1
        # Triton reads 'data' in its HTTP server and reports a misfit as INTERNAL: 500.
        if len(data) != expected:
            raise _HttpError(
                500, "Unable to parse 'data': Shape does not match true shape of 'data' field"
            )
        try:
            if datatype == "BYTES":
                if not all(isinstance(v, str) for v in data):
                    raise ValueError("expected strings")
                values = [v.encode("utf-8") for v in data]
                array: npt.NDArray[Any] = np.empty(len(values), dtype=np.object_)
                array[:] = values
            elif datatype == "BOOL":
                if not all(isinstance(v, bool) for v in data):
                    raise ValueError("expected booleans")
                array = np.array(data, dtype=np.bool_)
            else:
                if any(isinstance(v, bool) or not isinstance(v, int | float) for v in data):
                    raise ValueError("expected numbers")
                if not datatype.startswith("FP") and not all(isinstance(v, int) for v in data):
                    raise ValueError("expected integers")
                array = np.array(data, dtype=_DATATYPES[datatype])
        except (TypeError, ValueError, OverflowError) as exc:
            raise _HttpError(
                500, f"Unable to parse 'data': input '{name}': {datatype} {exc}"
            ) from exc
        return array.reshape(shape)

    @staticmethod
    def _output_json(tensor: pb_utils.Tensor) -> dict[str, Any]:
        # The datatype is the tensor's, not config.pbtxt's: Triton reports what the model made
        # (a float64 array answers FP64 even where the config says TYPE_FP32).
        array = tensor.as_numpy()
        datatype = next(
            (k for k, v in _DATATYPES.items() if array.dtype == v),
            "BYTES" if array.dtype.type == np.bytes_ else "",
        )
        if not datatype:
            raise TypeError(f"output '{tensor.name()}' has unsupported dtype {array.dtype}")
        if datatype == "FP16":  # http_server.cc WriteDataToJson
            raise _HttpError(
                400,
                "sending FP16 data via JSON is not supported. Please use the binary data format "
                "for output",
            )
        flat = array.reshape(-1).tolist()
        if datatype == "BYTES":
            data: list[Any] = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat
            ]
        elif datatype == "BOOL":
            data = [bool(v) for v in flat]
        else:
            data = flat
        return {
            "name": tensor.name(),
            "datatype": datatype,
            "shape": list(array.shape),
            "data": data,
        }
