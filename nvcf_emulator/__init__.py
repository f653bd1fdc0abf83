"""nvcf-emulator: NVIDIA Cloud Functions on your laptop, for tests and development.

>>> from nvcf_emulator import Emulator
>>> with Emulator() as nvcf:
...     ...  # requests to https://api.nvcf.nvidia.com now reach the emulator
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import EmulatorConfig
from .domain.accounts import Account
from .domain.assets import Asset
from .domain.calls import Call
from .domain.clock import Clock
from .domain.faults import Fault, Faults
from .domain.functions import FunctionStatus, FunctionVersion
from .domain.invocations import Invocation, InvocationStatus
from .emulator import AssetNotUploadedError, Emulator, EmulatorSettings, UnknownAssetError
from .invocation_api import FunctionNotFoundError, FunctionRef
from .remote import RemoteEmulator
from .server import EmulatorServer
from .worker import Container, ContainerRequest, ContainerResponse

__all__ = [
    "Account",
    "Asset",
    "AssetNotUploadedError",
    "Call",
    "Clock",
    "Container",
    "ContainerRequest",
    "ContainerResponse",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorSettings",
    "Fault",
    "Faults",
    "FunctionNotFoundError",
    "FunctionRef",
    "FunctionStatus",
    "FunctionVersion",
    "Invocation",
    "InvocationStatus",
    "RemoteEmulator",
    "UnknownAssetError",
    "__version__",
]
