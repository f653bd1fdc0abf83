"""A stand-in for Triton's ``triton_python_backend_utils``, for models run by the emulator.

:class:`~nvcf_emulator.triton.TritonContainer` makes this module importable as
``triton_python_backend_utils`` only while it loads, initializes, runs or finalizes a model
(``sys.modules`` entry put in place and taken away under a lock), so a model's
``import triton_python_backend_utils as pb_utils`` works unmodified, and nothing named
``triton_python_backend_utils`` is left behind to shadow a real installation. Needs numpy
(``pip install 'nvcf-emulator[triton]'``).

What the real module (python_backend ``triton_python_backend_utils.py`` plus the names the
stub copies in from ``c_python_backend_utils``) offers, and what this stand-in covers:

=====================================================  =======================================
Real API                                               Here
=====================================================  =======================================
``Tensor(name, numpy_array)``, ``name()``,             yes (numpy only; ``is_cpu()`` is always
``as_numpy()``, ``triton_dtype()``, ``shape()``,       true)
``is_cpu()``
``Tensor.to_dlpack()`` / ``from_dlpack()``             no: raise ``TritonModelException``
``InferenceRequest.inputs()``, ``request_id()``,       yes
``correlation_id()``, ``requested_output_names()``,
``parameters()`` (JSON string: body ``parameters``
and forwarded headers), ``flags()``, ``timeout()``,
``is_cancelled()``, ``model_name()``
``InferenceRequest.get_response_sender()``             yes: ``send(response, flags)``; one
                                                       final response per request
``InferenceRequest(...).exec()`` / ``async_exec()``    no (BLS): raise ``TritonModelException``
(BLS)
``InferenceResponse(output_tensors, error,             yes
parameters)``, ``output_tensors()``,
``has_error()``, ``error()``, ``parameters()``
``TritonError(msg, code)``, ``message()``,             yes, with the codes ``UNKNOWN``,
``code()``                                             ``INTERNAL``, ``NOT_FOUND``,
                                                       ``INVALID_ARG``, ``UNAVAILABLE``,
                                                       ``UNSUPPORTED``, ``ALREADY_EXISTS``,
                                                       ``CANCELLED``
``TritonModelException``                               yes
``get_input_tensor_by_name``,                          yes
``get_output_tensor_by_name``,
``get_input_config_by_name``,
``get_output_config_by_name``,
``using_decoupled_model_transaction_policy``
``triton_string_to_numpy``, ``TRITON_STRING_TO_NUMPY``, yes
``triton_to_numpy_type``, ``numpy_to_triton_type``,
``serialize_byte_tensor``, ``deserialize_bytes_tensor``
``ModelConfig`` (``auto_complete_config``):            yes
``as_dict``, ``set_max_batch_size``, ``add_input``,
``add_output``, ``set_dynamic_batching``,
``set_model_transaction_policy``
``Logger.log_info/log_warn/log_error/log_verbose``,    yes, to the ``nvcf_emulator.triton``
``Logger.log(msg, level)``, ``LogLevel``               Python logger
``TRITONSERVER_*`` flag constants                      yes
``helpers.get_input_path()`` / ``get_output_path()``   yes: see :mod:`.helpers` (NVCF's helper
and the other NVCF helpers                             names; the no-argument form reads the
                                                       running request)
``MetricFamily``, ``load_model``, ``unload_model``,    no
``is_model_ready``, ``PreferredMemory``,
decoupled mode, request rescheduling, GPU tensors
=====================================================  =======================================
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from . import helpers

__all__ = [
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END",
    "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START",
    "TRITONSERVER_REQUEST_RELEASE_ALL",
    "TRITONSERVER_REQUEST_RELEASE_RESCHEDULE",
    "TRITONSERVER_RESPONSE_COMPLETE_FINAL",
    "TRITON_STRING_TO_NUMPY",
    "InferenceRequest",
    "InferenceResponse",
    "LogLevel",
    "Logger",
    "ModelConfig",
    "ResponseSender",
    "Tensor",
    "TritonError",
    "TritonModelException",
    "deserialize_bytes_tensor",
    "get_input_config_by_name",
    "get_input_tensor_by_name",
    "get_output_config_by_name",
    "get_output_tensor_by_name",
    "helpers",
    "numpy_to_triton_type",
    "serialize_byte_tensor",
    "triton_string_to_numpy",
    "triton_to_numpy_type",
    "using_decoupled_model_transaction_policy",
]

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

TRITON_STRING_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

# TRITONSERVER_DataType codes, as the real module numbers them.
_CODE_TO_NUMPY: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}


def triton_to_numpy_type(data_type: int) -> Any:
    return _CODE_TO_NUMPY.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    for code, np_type in _CODE_TO_NUMPY.items():
        if data_type == np_type:
            return code
    if data_type == np.bytes_:
        return 13
    return None


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor: npt.NDArray[Any]) -> bytes | tuple[()] | None:
    """Length-prefixed (``<I``) bytes of every element in C order, as the real helper."""
    if input_tensor.size == 0:
        return ()
    if input_tensor.dtype == np.object_ or input_tensor.dtype.type == np.bytes_:
        parts: list[bytes] = []
        for obj in input_tensor.flatten(order="C"):
            item = obj if isinstance(obj, bytes) else str(obj).encode("utf-8")
            parts.append(struct.pack("<I", len(item)))
            parts.append(item)
        return b"".join(parts)
    return None


def deserialize_bytes_tensor(encoded_tensor: bytes) -> npt.NDArray[np.object_]:
    strs: list[bytes] = []
    offset = 0
    while offset < len(encoded_tensor):
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        offset += 4
        strs.append(bytes(encoded_tensor[offset : offset + length]))
        offset += length
    return np.array(strs, dtype=np.object_)


class TritonModelException(Exception):
    """Raised by the API on misuse; raise it from ``initialize``/``execute``/``finalize``."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg


class TritonError:
    """An error for one response: ``InferenceResponse(error=TritonError("...", code))``."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, msg: str, code: int = INTERNAL) -> None:
        self._msg = msg
        self._code = code

    def message(self) -> str:
        return self._msg

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return self._msg

    def __repr__(self) -> str:
        return f"TritonError({self._msg!r}, {self._code})"


class Tensor:
    """A named numpy array (CPU only)."""

    def __init__(self, name: str, numpy_array: Any, triton_dtype: int | None = None) -> None:
        if not isinstance(numpy_array, np.ndarray):
            numpy_array = np.asarray(numpy_array)
        if numpy_array.dtype.type == np.str_ or numpy_array.dtype == np.void:
            raise TritonModelException(
                "Tensor dtype used for numpy_array is not support by Python backend. "
                "Please use np.object_ instead."
            )
        if triton_dtype is not None:
            wanted = triton_to_numpy_type(triton_dtype)
            if wanted is not None and numpy_array.dtype != wanted:
                numpy_array = numpy_array.view(wanted)
        else:
            triton_dtype = numpy_to_triton_type(numpy_array.dtype)
            if triton_dtype is None:
                triton_dtype = numpy_to_triton_type(numpy_array.dtype.type)
        self._name = name
        self._array: npt.NDArray[Any] = numpy_array
        self._triton_dtype = triton_dtype

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> npt.NDArray[Any]:
        return self._array

    def triton_dtype(self) -> int | None:
        return self._triton_dtype

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        raise TritonModelException("DLPack tensors are not supported by the emulator")

    @staticmethod
    def from_dlpack(name: str, dlpack_tensor: Any) -> Tensor:
        raise TritonModelException("DLPack tensors are not supported by the emulator")

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


class InferenceResponse:
    """One response: output tensors, or an error."""

    def __init__(
        self,
        output_tensors: Sequence[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: Mapping[str, bool | int | str] | str | None = None,
    ) -> None:
        if output_tensors is None:
            output_tensors = []
        if not isinstance(output_tensors, list):
            raise TritonModelException('"output_tensors" must be a list.')
        self._output_tensors: list[Tensor] = output_tensors
        self._error = error
        self._parameters: dict[str, Any] = (
            json.loads(parameters) if isinstance(parameters, str) else dict(parameters or {})
        )

    def output_tensors(self) -> list[Tensor]:
        return self._output_tensors

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return json.dumps(self._parameters)


class ResponseSender:
    """``request.get_response_sender()``: the emulator keeps the one final response."""

    def __init__(self) -> None:
        self.responses: list[InferenceResponse] = []
        self.closed = False

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        if self.closed:
            raise TritonModelException("Unable to send response. Response sender has been closed.")
        if response is not None:
            self.responses.append(response)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.closed = True

    def is_cancelled(self) -> bool:
        return False


class InferenceRequest:
    """A request given to ``execute``.

    Models get these from the emulator; constructing one (for BLS) works, but ``exec()`` does
    not.
    """

    def __init__(
        self,
        model_name: str = "",
        requested_output_names: Sequence[str] = (),
        inputs: Sequence[Tensor] = (),
        request_id: str = "",
        correlation_id: int | str = 0,
        flags: int = 0,
        timeout: int = 0,
        parameters: Mapping[str, bool | int | str] | str | None = None,
        **_: Any,
    ) -> None:
        self._model_name = model_name
        self._requested_output_names = list(requested_output_names)
        self._inputs = list(inputs)
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._parameters: dict[str, Any] = (
            json.loads(parameters) if isinstance(parameters, str) else dict(parameters or {})
        )
        self._sender = ResponseSender()

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def requested_output_names(self) -> list[str]:
        return self._requested_output_names

    def parameters(self) -> str:
        """The request's parameters as a JSON string (forwarded headers included)."""
        return json.dumps(self._parameters)

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def model_name(self) -> str:
        return self._model_name

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self) -> ResponseSender:
        return self._sender

    def set_release_flags(self, flags: int) -> None:
        if flags & TRITONSERVER_REQUEST_RELEASE_RESCHEDULE:
            raise TritonModelException("request rescheduling is not supported by the emulator")

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        raise TritonModelException(
            "BLS (InferenceRequest.exec) is not supported by the emulator; "
            "call the other model's code directly in your test"
        )

    async def async_exec(self, decoupled: bool = False) -> InferenceResponse:
        return self.exec(decoupled)


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    for tensor in inference_request.inputs():
        if tensor.name() == name:
            return tensor
    return None


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    for tensor in inference_response.output_tensors():
        if tensor.name() == name:
            return tensor
    return None


def get_input_config_by_name(model_config: Mapping[str, Any], name: str) -> Any:
    for props in model_config.get("input", []):
        if props["name"] == name:
            return props
    return None


def get_output_config_by_name(model_config: Mapping[str, Any], name: str) -> Any:
    for props in model_config.get("output", []):
        if props["name"] == name:
            return props
    return None


def using_decoupled_model_transaction_policy(model_config: Mapping[str, Any]) -> bool:
    policy = model_config.get("model_transaction_policy")
    return bool(policy.get("decoupled", False)) if isinstance(policy, Mapping) else False


class ModelConfig:
    """The configuration ``auto_complete_config`` may complete."""

    def __init__(self, model_config: str | Mapping[str, Any]) -> None:
        if isinstance(model_config, str):
            self._model_config: dict[str, Any] = json.loads(model_config)
        else:
            self._model_config = json.loads(json.dumps(model_config))

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = int(self._model_config.get("max_batch_size", 0))
        if current > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {current}, but in "
                f"auto-complete-config function for model '{self._model_config['name']}' "
                f"specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for other in ("sequence_batching", "ensemble_scheduling"):
            if other in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{other}', but "
                    "auto-complete-config function for model "
                    f"'{self._model_config['name']}' tries to set scheduling_choice as "
                    "'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, transaction_policy_dict: Mapping[str, Any]) -> None:
        self._model_config["model_transaction_policy"] = dict(transaction_policy_dict)

    def _add(self, kind: str, tensor: Mapping[str, Any]) -> None:
        tensor = dict(tensor)
        model = self._model_config.get("name", "")
        for prop in ("name", "data_type", "dims"):
            if prop not in tensor:
                raise ValueError(
                    f"{kind} '{tensor.get('name', '')}' in auto-complete-config function for "
                    f"model '{model}' is missing '{prop}' property."
                )
        tensors = self._model_config.setdefault(kind, [])
        for current in tensors:
            if current["name"] != tensor["name"]:
                continue
            if current.get("data_type", "TYPE_INVALID") not in (
                "TYPE_INVALID",
                tensor["data_type"],
            ):
                raise ValueError(
                    f"unable to load model '{model}', configuration expects datatype "
                    f"{current['data_type']} for {kind} '{tensor['name']}', model provides "
                    f"{tensor['data_type']}"
                )
            if current.get("dims") and list(current["dims"]) != list(tensor["dims"]):
                raise ValueError(
                    f"model '{model}', tensor '{tensor['name']}': the model expects dims "
                    f"{list(tensor['dims'])} but the model configuration specifies dims "
                    f"{list(current['dims'])}"
                )
            current.update(tensor)
            return
        tensor.setdefault("optional", False)
        tensor.setdefault("is_shape_tensor", False)
        tensors.append(tensor)

    def add_input(self, input: Mapping[str, Any]) -> None:
        self._add("input", input)

    def add_output(self, output: Mapping[str, Any]) -> None:
        self._add("output", output)


class LogLevel(IntEnum):
    INFO = 0
    WARNING = 1
    ERROR = 2
    VERBOSE = 3


_LOG = logging.getLogger("nvcf_emulator.triton")
_LEVELS = {
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.VERBOSE: logging.DEBUG,
}


class Logger:
    """``pb_utils.Logger``: messages go to the ``nvcf_emulator.triton`` Python logger."""

    @staticmethod
    def log(message: str, level: LogLevel = LogLevel.INFO) -> None:
        _LOG.log(_LEVELS.get(LogLevel(level), logging.INFO), "%s", message)

    @staticmethod
    def log_info(message: str) -> None:
        _LOG.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        _LOG.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        _LOG.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _LOG.debug("%s", message)
