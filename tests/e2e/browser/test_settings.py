"""Settings in the browser: SSH keys added by paste and from a .pub file (fingerprints as the
API computes them), a private key refused before it leaves the page, deletion with a
confirmation; an API token shown once, copied, working, then revoked."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import expect

from tests.e2e.browser.conftest import Tab, sid_of, sign_in

pytestmark = pytest.mark.e2e


def keypair(comment: str) -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return f"{public.decode()} {comment}", private.decode()


def test_ssh_keys_and_api_tokens(open_tab: Callable[..., Tab], http: httpx.Client, email: str,
                                 tmp_path: Path) -> None:
    tab = open_tab()
    sign_in(tab, http, email, next_path="/app/settings")
    page = tab.page
    me = httpx.Client(base_url=tab.base, cookies={"sid": sid_of(tab)}, timeout=30)
    expect(page.get_by_text("No SSH keys yet")).to_be_visible()

    # By paste (the name comes from the key's comment).
    pasted, private = keypair("alice@laptop")
    page.get_by_label("Public key").fill(pasted)
    page.get_by_role("button", name="Add key").click()
    expect(page.get_by_text(re.compile(r"Key alice@laptop added \(SHA256:"))).to_be_visible()
    keys = page.get_by_role("region", name="SSH keys table")
    first = me.get("/v1/ssh-keys").json()["keys"][0]
    expect(keys.get_by_text(first["fingerprint"])).to_be_visible()
    assert first["name"] == "alice@laptop"

    # A private key never leaves the page.
    page.get_by_label("Public key").fill(private)
    page.get_by_role("button", name="Add key").click()
    expect(page.get_by_role("alert")).to_contain_text("That is a private key")
    assert len(me.get("/v1/ssh-keys").json()["keys"]) == 1

    # From a file; a duplicate is refused with the API's reason.
    from_file, _ = keypair("bob@desktop")
    pub = tmp_path / "id_ed25519.pub"
    pub.write_text(from_file + "\n")
    page.get_by_label("Or pick the .pub file").set_input_files(str(pub))
    expect(page.get_by_label("Public key")).to_have_value(from_file)
    expect(page.get_by_label("Key name")).to_have_value("bob@desktop")
    page.get_by_role("button", name="Add key").click()
    expect(keys.get_by_role("row")).to_have_count(3)  # header + 2
    page.get_by_label("Public key").fill(pasted)
    page.get_by_role("button", name="Add key").click()
    expect(page.get_by_role("alert")).to_contain_text("already on your account")

    # Delete, after confirming.
    keys.get_by_role("button", name="Delete key alice@laptop").click()
    dialog = page.get_by_role("dialog", name="Delete this key?")
    dialog.get_by_role("button", name="Delete key").click()
    expect(keys.get_by_role("row")).to_have_count(2)
    assert [k["name"] for k in me.get("/v1/ssh-keys").json()["keys"]] == ["bob@desktop"]

    # A token: shown once, with a copy button; it works as a Bearer token; revoked, it does not.
    page.get_by_label("Token name").fill("ci-scripts")
    page.get_by_role("button", name="Create token").click()
    shown = page.get_by_test_id("token-value")
    token = shown.inner_text()
    assert re.fullmatch(r"gpr_\S+", token)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=tab.base)
    page.get_by_role("button", name="Copy token").click()
    expect(page.get_by_role("button", name="Copied", exact=True)).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == token
    assert httpx.get(tab.base + "/v1/auth/me", headers={"authorization": f"Bearer {token}"}).status_code == 200
    page.get_by_role("button", name="I have copied it").click()
    expect(shown).to_have_count(0)
    page.reload()
    expect(page.get_by_text(token)).to_have_count(0)  # never shown again
    tokens = page.get_by_role("region", name="API tokens table")
    tokens.get_by_role("button", name="Revoke token ci-scripts").click()
    page.get_by_role("dialog", name="Revoke this token?").get_by_role("button", name="Revoke token").click()
    expect(page.get_by_text("No API tokens")).to_be_visible()
    assert httpx.get(tab.base + "/v1/auth/me", headers={"authorization": f"Bearer {token}"}).status_code == 401
