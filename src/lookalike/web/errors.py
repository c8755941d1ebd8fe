"""The JSON body of every error answer, the server's own (Host check, malformed requests)
and the routes' alike."""

from __future__ import annotations

import json


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": message, "status": status}).encode()
