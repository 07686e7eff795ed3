"""SSH key routes."""

from __future__ import annotations

from typing import Any

from gpurent import ssh_keys
from gpurent.api import Request, Router
from gpurent.telemetry import API, lambda_handler

router = Router()


@router.route("GET /v1/ssh-keys", summary="SSH keys on file, newest first", response="SshKeyList")
def list_keys(req: Request) -> dict[str, Any]:
    return {"keys": ssh_keys.list_keys(req.user_id)}


@router.route("POST /v1/ssh-keys", summary="Add an SSH public key", body=ssh_keys.NewKey, response="SshKey",
              errors=("weak_key", "duplicate_key"))
def add_key(req: Request) -> dict[str, Any]:
    return ssh_keys.add_key(req.user_id, req.parse(ssh_keys.NewKey))


@router.route("DELETE /v1/ssh-keys/{id}", summary="Delete an SSH key (running pods keep it)", response="Ok",
              errors=("key_not_found",))
def delete_key(req: Request) -> dict[str, Any]:
    ssh_keys.delete_key(req.user_id, req.path_params.get("id", ""))
    return {"ok": True}


handler = lambda_handler(router.handler, API)
