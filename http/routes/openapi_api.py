"""The hand-written API description (openapi.yaml beside this module), served as JSON."""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import orjson
import yaml
from aiohttp import web

SPEC_PATH = pathlib.Path(__file__).with_name("openapi.yaml")


@functools.lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


@functools.lru_cache(maxsize=1)
def _spec_json() -> bytes:
    return orjson.dumps(spec())


async def openapi_json(_request: web.Request) -> web.Response:
    return web.Response(body=_spec_json(), content_type="application/json")
