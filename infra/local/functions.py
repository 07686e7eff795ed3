"""Loads each function's handler module from `functions/<name>/app.py` the way
Lambda does (the module by file path, the domain package from the layer)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable
from typing import Any

from infra.local.template import ROOT

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]
_cache: dict[str, Handler] = {}
_lock = threading.Lock()


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
            _cache[key] = getattr(module, attr)
        return _cache[key]
