"""``from triton_python_backend_utils import helpers``: NVCF's request helpers, for emulated models.

NVCF's asset document shows ``helpers.get_input_path()`` and ``helpers.get_output_path()`` with no
arguments; the helper module NVIDIA publishes (``nv_cloud_function_helpers.nvcf_container.helpers``)
takes the request's parameter dict instead (the headers Triton forwarded, keys matched
case-insensitively). Both forms work here:

- ``get_input_path(params)`` / ``get_output_path(params)`` behave as NVIDIA's helpers:
  ``NVCF-ASSET-DIR`` / ``NVCF-LARGE-OUTPUT-DIR`` from ``params``, else
  ``/var/inf/inputAssets/<reqid>`` / ``/var/inf/response/<reqid>``.
- With no argument they read the parameters of the request the emulator is running — the headers
  that matched the container's forward pattern, nothing more — so a model relying on a header
  Triton would not forward gets the same fallback path as in production, and fails the same way.

While a request runs, the environment variable ``NVCF_ASSET_ID`` holds the first forwarded asset
id (the seed document's variable; NVIDIA's worker is not known to set it, so prefer
``get_asset_ids(params)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_NVCF_MSG_SIZE = 5 * 1000 * 1000  # NVIDIA's helper library default

# The parameters of the request being executed (set by the Triton adapter under its lock).
_current: dict[str, Any] | None = None


def _params(request_parameters: Mapping[str, Any] | str | None, caller: str) -> dict[str, Any]:
    if request_parameters is None:
        if _current is None:
            raise RuntimeError(
                f"helpers.{caller}() without arguments only works while a request runs; "
                "pass the request's parameters: json.loads(request.parameters())"
            )
        request_parameters = _current
    elif isinstance(request_parameters, str):  # request.parameters() as returned
        request_parameters = json.loads(request_parameters)
    assert isinstance(request_parameters, Mapping)
    return {str(k).upper(): v for k, v in request_parameters.items()}


def get_request_id(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    return str(_params(request_parameters, "get_request_id").get("NVCF-REQID", ""))


def get_input_path(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    params = _params(request_parameters, "get_input_path")
    reqid = params.get("NVCF-REQID", "")
    return str(params.get("NVCF-ASSET-DIR", f"/var/inf/inputAssets/{reqid}"))


def get_output_path(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    params = _params(request_parameters, "get_output_path")
    reqid = params.get("NVCF-REQID", "")
    return str(params.get("NVCF-LARGE-OUTPUT-DIR", f"/var/inf/response/{reqid}"))


def get_asset_ids(request_parameters: Mapping[str, Any] | str | None = None) -> list[str]:
    """``NVCF-FUNCTION-ASSET-IDS`` split on commas (``[""]`` without it, as NVIDIA's helper)."""
    value = _params(request_parameters, "get_asset_ids").get("NVCF-FUNCTION-ASSET-IDS", "")
    return str(value).split(",")


def get_max_msg_size(request_parameters: Mapping[str, Any] | str | None = None) -> int:
    value = _params(request_parameters, "get_max_msg_size").get("NVCF-MAX-RESPONSE-SIZE-BYTES")
    return DEFAULT_MAX_NVCF_MSG_SIZE if value is None else int(value)


def get_nca_id(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    return str(_params(request_parameters, "get_nca_id").get("NVCF-NCAID", ""))


def get_properties_sub(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    return str(_params(request_parameters, "get_properties_sub").get("NVCF-SUB", ""))


def get_function_id(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    return str(_params(request_parameters, "get_function_id").get("NVCF-FUNCTION-ID", ""))


def get_function_name(request_parameters: Mapping[str, Any] | str | None = None) -> str:
    return str(_params(request_parameters, "get_function_name").get("NVCF-FUNCTION-NAME", ""))


def update_progress_file(
    request_parameters: Mapping[str, Any] | str | None = None,
    progress_value: int = 0,
    partial_response: Any = None,
) -> None:
    """Write ``<output path>/progress`` as NVIDIA's helper does (the worker turns it into 202s)."""
    params = _params(request_parameters, "update_progress_file")
    doc = {
        "id": get_request_id(params),
        "progress": progress_value,
        "partialResponse": {} if partial_response is None else partial_response,
    }
    with open(os.path.join(get_output_path(params), "progress"), "w") as f:
        json.dump(doc, f)


def get_config_value(value_name: str, model_config: Mapping[str, Any] | None = None) -> str:
    """An environment variable, else the model config's ``parameters`` string value."""
    if model_config is None:
        return os.environ[value_name]
    return os.environ.get(value_name, str(model_config["parameters"][value_name]["string_value"]))
