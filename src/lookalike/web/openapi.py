"""The OpenAPI 3.1 description of the HTTP API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from lookalike import __version__


def _param(name: str, schema: dict[str, Any], description: str, where: str = "query") -> dict:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_ERRORS = {
    "400": _json(
        "bad input: the message says what and why (also: a Host that is not this server)",
        "Error",
    ),
    "404": _json("no such item, file or evaluation", "Error"),
}

_QUERY_OPTIONS = [
    _param("k", {"type": "integer", "minimum": 1, "default": 4}, "number of results"),
    _param(
        "pool",
        {"type": "integer", "minimum": 1, "default": 100},
        "candidates taken from the ANN index by the fused vector, then re-ranked exactly",
    ),
    _param(
        "head_weight",
        {"type": "number", "minimum": 0, "maximum": 1},
        "score = head_weight * cos(head) + (1 - head_weight) * cos(whole); "
        "omitted: the fused cosine the index ranks by",
    ),
    _param(
        "min_score",
        {"type": "number"},
        "leave out results whose score is under this; no_good_match says when none is left",
    ),
]

_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "path": {"type": "string", "description": "relative to the indexed folder"},
        "width": {"type": ["integer", "null"]},
        "height": {"type": ["integer", "null"]},
        "head_box": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "x0, y0, x1, y1 in the pixels of an image of width x height",
        },
        "fallback": {"type": "boolean", "description": "no face found: the head box is a guess"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

_RESULT = {
    "allOf": [
        {"$ref": "#/components/schemas/Item"},
        {
            "type": "object",
            "properties": {
                "score": {"type": "number"},
                "probability": {
                    "type": ["number", "null"],
                    "description": "P(same character) of the fused cosine, calibrated per "
                    "preset on the dev sets; null where the preset's settings are not",
                },
                "scores": {
                    "type": "object",
                    "description": "cosine similarity per view ('head', 'whole') and 'fused'",
                    "additionalProperties": {"type": "number"},
                },
            },
        },
    ]
}


def _object(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def openapi_spec() -> dict[str, Any]:
    query_response = {"200": _json("the query and its look-alikes, best first", "QueryResult")}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lookalike",
            "version": __version__,
            "description": "Look-alike search in one indexed image collection (read-only).",
        },
        "paths": {
            "/api/info": {
                "get": {
                    "summary": "The collection: preset, views, counts, labels, limits",
                    "responses": {"200": _json("collection info", "Info")},
                }
            },
            "/api/items": {
                "get": {
                    "summary": "List the indexed images by path, a page at a time",
                    "parameters": [
                        _param("offset", {"type": "integer", "minimum": 0, "default": 0}, ""),
                        _param("limit", {"type": "integer", "minimum": 1, "default": 48}, ""),
                        _param(
                            "label",
                            {"type": "array", "items": {"type": "string"}},
                            "filter 'task:value', repeatable (all must match)",
                        ),
                    ],
                    "responses": {"200": _json("one page", "ItemPage"), **_ERRORS},
                }
            },
            "/api/items/{id}": {
                "get": {
                    "summary": "One indexed image",
                    "parameters": [_param("id", {"type": "integer"}, "item id", "path")],
                    "responses": {"200": _json("the item", "Item"), **_ERRORS},
                }
            },
            "/api/query": {
                "get": {
                    "summary": "Look-alikes of an indexed image, by id or by path",
                    "parameters": [
                        _param("id", {"type": "integer"}, "item id (or give path)"),
                        _param("path", {"type": "string"}, "path inside the indexed folder"),
                        *_QUERY_OPTIONS,
                    ],
                    "responses": {**query_response, **_ERRORS},
                },
                "post": {
                    "summary": "Look-alikes of an uploaded image (the raw bytes as the body)",
                    "parameters": _QUERY_OPTIONS,
                    "requestBody": {
                        "required": True,
                        "content": {
                            t: {"schema": {"type": "string", "format": "binary"}}
                            for t in ("image/png", "image/jpeg", "image/webp", "image/gif")
                        },
                    },
                    "responses": {
                        **query_response,
                        **_ERRORS,
                        "408": _json("the upload stalled before its Content-Length", "Error"),
                        "411": _json("no Content-Length", "Error"),
                        "413": _json("upload too large", "Error"),
                        "415": _json("not an accepted image type", "Error"),
                    },
                },
            },
            "/api/evaluation": {
                "get": {
                    "summary": "The last `lookalike evaluate` table of this collection",
                    "responses": {
                        "200": {
                            "description": "evaluate --json output",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **_ERRORS,
                    },
                }
            },
            "/api/groups": {
                "get": {
                    "summary": "Character groups without labels (as `lookalike groups "
                    "--min-size 2 --json`), members with their item fields",
                    "responses": {"200": _object("groups, ungrouped pictures")},
                }
            },
            "/api/duplicates": {
                "get": {
                    "summary": "Near-duplicate groups (as `lookalike duplicates --json`), the "
                    "file to keep first",
                    "responses": {"200": _object("groups: keep and others")},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {"200": {"description": "OpenAPI 3.1 document"}},
                }
            },
            "/files/{path}": {
                "get": {
                    "summary": "The file of an indexed image (only from inside the indexed folder)",
                    "parameters": [_param("path", {"type": "string"}, "item path", "path")],
                    "responses": {"200": {"description": "the file's bytes"}, **_ERRORS},
                }
            },
            "/thumbs/{path}": {
                "get": {
                    "summary": "A JPEG thumbnail of an indexed image",
                    "parameters": [_param("path", {"type": "string"}, "item path", "path")],
                    "responses": {"200": {"description": "image/jpeg"}, **_ERRORS},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
                },
                "Item": _ITEM,
                "Result": _RESULT,
                "ItemPage": {
                    "type": "object",
                    "properties": {
                        "total": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "limit": {"type": "integer"},
                        "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                    },
                },
                "QueryResult": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "object", "description": "kind 'item' or 'upload'"},
                        "k": {"type": "integer"},
                        "pool": {"type": "integer"},
                        "head_weight": {"type": ["number", "null"]},
                        "score": {"type": "string", "enum": ["fused", "head_weight"]},
                        "views": {"type": "array", "items": {"type": "string"}},
                        "min_score": {"type": ["number", "null"]},
                        "left_out": {"type": "integer", "description": "under min_score"},
                        "no_good_match": {
                            "type": "boolean",
                            "description": "no result reaches min_score, or the best one is "
                            "probably not the same character (probability under 0.5)",
                        },
                        "calibration": {
                            "type": ["string", "null"],
                            "description": "the dev sets the probabilities were fitted on",
                        },
                        "results": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Result"},
                        },
                    },
                },
                "Info": {"type": "object"},
            }
        },
    }
