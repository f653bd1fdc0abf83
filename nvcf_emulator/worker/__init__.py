"""The emulated GPU worker: asset staging and the containers it calls."""

from __future__ import annotations

from .containers import (
    AsgiContainer,
    CallableContainer,
    Container,
    ContainerConnectionError,
    ContainerRequest,
    ContainerResponse,
    UrlContainer,
    WsgiContainer,
    as_container,
)

__all__ = [
    "AsgiContainer",
    "CallableContainer",
    "Container",
    "ContainerConnectionError",
    "ContainerRequest",
    "ContainerResponse",
    "UrlContainer",
    "WsgiContainer",
    "as_container",
]
