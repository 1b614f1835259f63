"""Holds every response the suite sees to http/routes/openapi.yaml: documented status, content type, schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from openapi_schema_validator import OAS30Validator, oas30_format_checker


def _inline(node: Any, root: dict, depth: int = 0) -> Any:
    """The spec with every local $ref replaced by what it points at (our spec has no cycles)."""
    if depth > 50:
        raise ValueError("$ref nesting too deep (a cycle?)")
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = root
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _inline(target, root, depth + 1)
        return {k: _inline(v, root, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, root, depth + 1) for v in node]
    return node


@dataclass
class SpecChecker:
    spec: dict
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = _inline(self.spec["paths"], self.spec)
        self._patterns = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in self.paths]

    def template_of(self, path: str) -> str | None:
        if path in self.paths:
            return path
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return None

    def check(self, method: str, template: str | None, status: int, content_type: str, body: bytes) -> None:
        where = f"{method} {template} -> {status}"
        if template is None:  # an unknown route: only the envelope can be checked
            if status >= 400 and not self._is_error(body):
                self.failures.append(f"{where}: error body is not the envelope: {body[:200]!r}")
            return
        if method == "HEAD":  # aiohttp answers HEAD for every GET route; nothing to check
            return
        operation = self.paths[template].get(method.lower())
        if operation is None:
            if status != 405:
                self.failures.append(f"{where}: method not in the spec")
            return
        self.seen.add((method, template, status))
        documented = operation["responses"].get(str(status))
        if documented is None:
            self.failures.append(f"{where}: status not documented")
            return
        content = documented.get("content")
        if not content:
            return
        if content_type not in content:
            self.failures.append(f"{where}: content type {content_type} not documented ({list(content)})")
            return
        schema = content[content_type].get("schema")
        if schema is None or content_type != "application/json":
            return
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            self.failures.append(f"{where}: body is not JSON")
            return
        errors = sorted(OAS30Validator(schema, format_checker=oas30_format_checker).iter_errors(doc), key=str)
        for err in errors[:3]:
            self.failures.append(f"{where}: {'/'.join(map(str, err.absolute_path))}: {err.message[:300]}")

    @staticmethod
    def _is_error(body: bytes) -> bool:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(doc, dict) and set(doc) == {"error"} and {"code", "message", "details"} <= set(doc["error"])

    def middleware(self):
        """Server-side: sees each final response of an in-process app."""

        @web.middleware
        async def check(request: web.Request, handler) -> web.StreamResponse:
            response = await handler(request)
            if isinstance(response, web.Response) and not response.prepared:
                template = self.template_of(request.path) if request.match_info.route.resource else None
                self.check(request.method, template, response.status, response.content_type, response.body or b"")
            return response

        return check

    def take_failures(self) -> list[str]:
        out, self.failures = self.failures, []
        return out
