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
from .domain.clock import Clock
from .domain.invocations import Invocation
from .emulator import Emulator
from .invocation_api import FunctionRef
from .remote import RemoteEmulator
from .server import EmulatorServer
from .worker import ContainerRequest, ContainerResponse

__all__ = [
    "Account",
    "Asset",
    "Clock",
    "ContainerRequest",
    "ContainerResponse",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "FunctionRef",
    "Invocation",
    "RemoteEmulator",
    "__version__",
]
