"""Triton Inference Server (Python backend) as an emulated NVCF container.

>>> from nvcf_emulator.triton import TritonContainer
>>> nvcf.add_function(TritonContainer("model_repository"), name="my-model",
...                   inference_url="/v2/models/my_model/infer")

Needs numpy: ``pip install 'nvcf-emulator[triton]'``. See :mod:`.adapter` for the server side and
:mod:`.pb_utils` for what of ``triton_python_backend_utils`` models can use.
"""

from __future__ import annotations

try:
    import numpy  # noqa: F401 - fail here, with the fix, when the extra is not installed
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("Triton containers need numpy: pip install 'nvcf-emulator[triton]'") from exc

from .adapter import (
    DEFAULT_FORWARD_PATTERN,
    TritonContainer,
    TritonLoadError,
    compile_forward_pattern,
)
from .config import ConfigError, model_config, parse_pbtxt

__all__ = [
    "DEFAULT_FORWARD_PATTERN",
    "ConfigError",
    "TritonContainer",
    "TritonLoadError",
    "compile_forward_pattern",
    "model_config",
    "parse_pbtxt",
]
