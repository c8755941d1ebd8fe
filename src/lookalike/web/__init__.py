"""The local web gallery and JSON API (`lookalike serve`)."""

from __future__ import annotations

from lookalike.web.gallery import Gallery, RequestError, WebLimits
from lookalike.web.server import GalleryServer, serve

__all__ = ["Gallery", "GalleryServer", "RequestError", "WebLimits", "serve"]
