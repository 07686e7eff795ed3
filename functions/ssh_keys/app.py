"""SSH key routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpurent import ssh_keys
from gpurent.api import Body, Request, Router
from gpurent.telemetry import API, lambda_handler

if TYPE_CHECKING:
    from gpurent.bodies import NewKey

router = Router()

NEW_KEY: Body[NewKey] = Body("NewKey")


@router.route("GET /v1/ssh-keys", summary="SSH keys on file, newest first", response="SshKeyList")
def list_keys(req: Request) -> dict[str, Any]:
    return {"keys": ssh_keys.list_keys(req.user_id)}


@router.route("POST /v1/ssh-keys", summary="Add an SSH public key", body=NEW_KEY, response="SshKey",
              errors=("weak_key", "duplicate_key"))
def add_key(req: Request) -> dict[str, Any]:
    return ssh_keys.add_key(req.user_id, req.parse(NEW_KEY))


@router.route("DELETE /v1/ssh-keys/{id}", summary="Delete an SSH key (running pods keep it)", response="Ok",
              errors=("key_not_found",))
def delete_key(req: Request) -> dict[str, Any]:
    ssh_keys.delete_key(req.user_id, req.path_params.get("id", ""))
    return {"ok": True}


handler = lambda_handler(router.handler, API)
