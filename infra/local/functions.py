"""Loads each function's handler module from `functions/<name>/app.py` the way
Lambda does (the module by file path, the domain package from the layer)."""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from infra.local.template import ROOT

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
_cache: dict[str, Handler] = {}
_lock = threading.Lock()

# The template logical id of the function whose handler is running in this thread (or task):
# what Lambda's execution environment knows as the function's name. The IAM test tier checks
# every AWS call made meanwhile against that function's role.
CURRENT_FUNCTION: ContextVar[str | None] = ContextVar("gpurent_current_function", default=None)


@dataclass
class LocalContext:
    """The fields of Lambda's context object the handlers read (Powertools' logger and metrics)."""

    function_name: str
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"

    def __post_init__(self) -> None:
        self.invoked_function_arn = self.invoked_function_arn or (
            f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}")
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def _logical_id(code_uri: str) -> str:
    from infra.local import template

    for logical_id, fn in template.functions().items():
        if str(fn.get("Properties", {}).get("CodeUri", "")).strip("/") == code_uri.strip("/"):
            return logical_id
    return code_uri.strip("/").replace("/", "_")


def _as_function(logical_id: str, fn: Handler) -> Handler:
    """`fn` invoked as Lambda invokes it: with a context (one is made when the caller passes
    None) and CURRENT_FUNCTION set to the function's logical id meanwhile."""

    @functools.wraps(fn)
    def invoke(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        token = CURRENT_FUNCTION.set(logical_id)
        try:
            return fn(event, context if context is not None else LocalContext(logical_id))
        finally:
            CURRENT_FUNCTION.reset(token)

    return invoke


def load_handler(code_uri: str, handler: str = "app.handler") -> Handler:
    key = f"{code_uri}:{handler}"
    with _lock:
        if key not in _cache:
            module_name, _, attr = handler.rpartition(".")
            path = ROOT / code_uri / f"{module_name}.py"
            name = "fn_" + code_uri.strip("/").replace("/", "_")
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            _cache[key] = _as_function(_logical_id(code_uri), getattr(module, attr))
        return _cache[key]
