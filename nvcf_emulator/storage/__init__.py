"""Where asset bytes live: an interface, and a local-disk implementation."""

from .base import BlobStore, BlobWriter
from .local import LocalBlobStore

__all__ = ["BlobStore", "BlobWriter", "LocalBlobStore"]
