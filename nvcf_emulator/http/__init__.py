"""The HTTP layer: one WSGI application for the control plane, pre-signed storage and admin."""

from .app import EmulatorApp

__all__ = ["EmulatorApp"]
