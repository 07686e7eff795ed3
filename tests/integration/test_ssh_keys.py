"""SSH keys through the real handlers: every rule of api.md §3.2 and of
decisions.md "Templates, SSH keys". Keys are real ones from `ssh-keygen`; each
error asserts status, code, envelope and that nothing was written."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

from gpurent import clock as clock_mod
from gpurent import ssh_keys
from tests.conftest import Api
from tests.integration.helpers import envelope, snapshot

SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen not installed")

KEY_FIELDS = {"id", "name", "fingerprint", "algorithm", "createdAt"}
KEY_ID = re.compile(r"key_[0-9A-HJKMNP-TV-Z]{26}")

ACCEPTED = {
    "ed25519": (("-t", "ed25519"), "ssh-ed25519"),
    "rsa2048": (("-t", "rsa", "-b", "2048"), "ssh-rsa"),
    "rsa4096": (("-t", "rsa", "-b", "4096"), "ssh-rsa"),
    "ecdsa256": (("-t", "ecdsa", "-b", "256"), "ecdsa-sha2-nistp256"),
    "ecdsa384": (("-t", "ecdsa", "-b", "384"), "ecdsa-sha2-nistp384"),
    "ecdsa521": (("-t", "ecdsa", "-b", "521"), "ecdsa-sha2-nistp521"),
}


def keygen(directory: Path, name: str, *args: str, comment: str = "alice@laptop") -> Path:
    """Generate a key pair with ssh-keygen; returns the private key's path (`.pub` beside it)."""
    assert SSH_KEYGEN is not None
    path = directory / name
    subprocess.run([SSH_KEYGEN, "-q", *args, "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True, timeout=120)
    return path


def pub_line(private: Path) -> str:
    """The `.pub` file as a user pastes it (with its trailing newline)."""
    return private.with_name(private.name + ".pub").read_text()


def fingerprint(private: Path) -> str:
    assert SSH_KEYGEN is not None
    out = subprocess.run([SSH_KEYGEN, "-E", "sha256", "-lf", str(private.with_name(private.name + ".pub"))],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return out.split()[1]


def ed25519(directory: Path, name: str = "id_ed25519", comment: str = "alice@laptop") -> Path:
    return keygen(directory, name, "-t", "ed25519", comment=comment)


def add(api: Api, name: str, public_key: str) -> dict[str, Any]:
    r = api.post("/v1/ssh-keys", {"name": name, "publicKey": public_key})
    assert r.status == 200, r.body
    return dict(r.json())


def listed(api: Api) -> list[dict[str, Any]]:
    r = api.get("/v1/ssh-keys")
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"keys"}
    return list(body["keys"])


def other_user(clock: clock_mod.ManualClock, email: str = "bob@example.com") -> tuple[Api, dict[str, Any]]:
    other = Api()
    u = other.sign_in(email)
    clock.advance(31)
    return other, u


# --------------------------------------------------------------------------- add


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_add_a_real_key(api: Api, user, clock, tmp_path: Path, kind: str) -> None:
    args, algorithm = ACCEPTED[kind]
    private = keygen(tmp_path, kind, *args)
    r = api.post("/v1/ssh-keys", {"name": f"my {kind}", "publicKey": pub_line(private)})
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == KEY_FIELDS
    assert body["name"] == f"my {kind}"
    assert body["algorithm"] == algorithm
    assert body["fingerprint"] == fingerprint(private)
    assert body["fingerprint"].startswith("SHA256:")
    assert KEY_ID.fullmatch(body["id"]), body["id"]
    assert ULID.from_str(body["id"].removeprefix("key_")).milliseconds == int(clock.now() * 1000)
    assert body["createdAt"] == clock_mod.iso(clock.now())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["createdAt"])
    assert "AAAA" not in r.body  # the key material is not echoed back
    assert listed(api) == [body]


def test_names_need_not_be_unique_and_may_be_64_characters(api: Api, user, clock, tmp_path: Path) -> None:
    a = add(api, "x" * 64, pub_line(ed25519(tmp_path, "a")))
    b = add(api, "x" * 64, pub_line(ed25519(tmp_path, "b")))
    c = add(api, "clé de l'ordinateur 💻", pub_line(ed25519(tmp_path, "c")))
    assert a["name"] == b["name"] == "x" * 64 and a["id"] != b["id"]
    assert c["name"] == "clé de l'ordinateur 💻"


def test_a_key_pasted_with_crlf_is_accepted(api: Api, user, tmp_path: Path) -> None:
    private = ed25519(tmp_path)
    body = add(api, "windows", pub_line(private).rstrip("\n") + "\r\n")
    assert body["fingerprint"] == fingerprint(private)


def test_list_is_newest_first_without_the_public_key(api: Api, user, clock, tmp_path: Path) -> None:
    assert listed(api) == []
    made = []
    for i, kind in enumerate(["ed25519", "rsa2048", "ecdsa256"]):
        args, _ = ACCEPTED[kind]
        made.append(add(api, f"key {i}", pub_line(keygen(tmp_path, kind, *args))))
        clock.advance(1)
    got = listed(api)
    assert got == list(reversed(made))
    for k in got:
        assert set(k) == KEY_FIELDS
    r = api.get("/v1/ssh-keys")
    assert "AAAA" not in r.body and "publicKey" not in r.body


def test_list_shows_only_the_callers_keys(api: Api, user, clock, tmp_path: Path) -> None:
    mine = add(api, "mine", pub_line(ed25519(tmp_path, "a")))
    other, _ = other_user(clock)
    theirs = add(other, "theirs", pub_line(ed25519(tmp_path, "b")))
    assert listed(api) == [mine]
    assert listed(other) == [theirs]


# --------------------------------------------------------------------------- duplicates


def test_the_same_key_twice_is_a_duplicate(api: Api, user, clock, tmp_path: Path) -> None:
    private = ed25519(tmp_path, comment="alice@laptop")
    first = add(api, "laptop", pub_line(private))
    clock.advance(5)
    line = pub_line(private).strip()
    key_type, blob, _comment = line.split(" ", 2)
    before = snapshot()
    for name, again in [
        ("laptop", line),  # exactly the same
        ("other name", f"{key_type} {blob} someone@else"),  # another comment, another name
        ("no comment", f"{key_type} {blob}"),
        ("padded", f"  {line}  \n"),
    ]:
        body = envelope(api.post("/v1/ssh-keys", {"name": name, "publicKey": again}), 400, "duplicate_key")
        assert body["message"] == "This public key is already on your account"
    assert snapshot() == before
    assert listed(api) == [first]


def test_another_user_may_add_the_same_key(api: Api, user, clock, tmp_path: Path) -> None:
    private = ed25519(tmp_path)
    mine = add(api, "shared", pub_line(private))
    other, _ = other_user(clock)
    theirs = add(other, "shared", pub_line(private))
    assert theirs["fingerprint"] == mine["fingerprint"] and theirs["id"] != mine["id"]
    assert listed(api) == [mine] and listed(other) == [theirs]


def test_a_deleted_key_can_be_added_again(api: Api, user, clock, tmp_path: Path) -> None:
    private = ed25519(tmp_path)
    first = add(api, "k", pub_line(private))
    assert api.delete(f"/v1/ssh-keys/{first['id']}").json() == {"ok": True}
    clock.advance(1)
    again = add(api, "k again", pub_line(private))
    assert again["fingerprint"] == first["fingerprint"] and again["id"] != first["id"]
    assert listed(api) == [again]


# --------------------------------------------------------------------------- weak keys


def test_rsa_1024_is_weak(api: Api, user, tmp_path: Path) -> None:
    private = keygen(tmp_path, "rsa1024", "-t", "rsa", "-b", "1024")
    before = snapshot()
    body = envelope(api.post("/v1/ssh-keys", {"name": "old", "publicKey": pub_line(private)}), 400, "weak_key")
    assert body["message"] == "Keys must be at least RSA 2048 or Ed25519"
    assert snapshot() == before
    assert listed(api) == []


def test_dsa_is_weak(api: Api, user, tmp_path: Path) -> None:
    try:
        private = keygen(tmp_path, "dsa", "-t", "dsa")
    except subprocess.CalledProcessError as exc:  # OpenSSH >= 9.8 is built without DSA
        pytest.skip(f"this ssh-keygen cannot generate DSA keys: {exc.stderr!r}")
    before = snapshot()
    envelope(api.post("/v1/ssh-keys", {"name": "dsa", "publicKey": pub_line(private)}), 400, "weak_key")
    assert snapshot() == before
    assert listed(api) == []


# --------------------------------------------------------------------------- validation


def test_garbage_and_private_keys_are_refused(api: Api, user, tmp_path: Path) -> None:
    private = ed25519(tmp_path)
    private_pem = keygen(tmp_path, "pem", "-t", "rsa", "-b", "2048", "-m", "PEM")
    line = pub_line(private).strip()
    key_type, blob, _ = line.split(" ", 2)
    garbage = [
        "",
        "   ",
        "hello world",
        "ssh-ed25519",
        "ssh-ed25519 AAAA",
        f"{key_type} {blob[:-4]}",  # truncated
        f"ssh-rsa {blob}",  # the type does not match the blob
        f"{line}\n{line}",  # two lines
        private.read_text(),  # an OpenSSH private key
        private_pem.read_text(),  # a PEM private key
        f'from="10.0.0.1" {line}',  # authorized_keys options
    ]
    before = snapshot()
    for public_key in garbage:
        body = envelope(api.post("/v1/ssh-keys", {"name": "k", "publicKey": public_key}), 400, "validation_failed")
        assert "publicKey" in body.get("details", {}), (public_key, body)
        assert "PRIVATE KEY" not in str(body) and blob not in str(body)  # never echoes key material
    assert snapshot() == before
    assert listed(api) == []


@pytest.mark.parametrize(
    "name",
    ["", "   ", "x" * 65, "line\nbreak", "tab\there", "nul\x00", "bell\x07", "del\x7f", "esc\x1b[31m"],
)
def test_bad_names_are_refused(api: Api, user, tmp_path: Path, name: str) -> None:
    public_key = pub_line(ed25519(tmp_path))
    before = snapshot()
    body = envelope(api.post("/v1/ssh-keys", {"name": name, "publicKey": public_key}), 400, "validation_failed")
    assert "name" in body.get("details", {}), body
    assert snapshot() == before
    assert listed(api) == []


@pytest.mark.parametrize("name", ["c1\x85next-line", "csi\x9b31m"])
def test_c1_control_characters_in_names_are_refused(api: Api, user, tmp_path: Path, name: str) -> None:
    public_key = pub_line(ed25519(tmp_path))
    before = snapshot()
    body = envelope(api.post("/v1/ssh-keys", {"name": name, "publicKey": public_key}), 400, "validation_failed")
    assert "name" in body.get("details", {}), body
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"publicKey": "PUB"}, "name"),
        ({"name": "k"}, "publicKey"),
        ({}, "name"),
        ({"name": "k", "publicKey": "PUB", "comment": "x"}, "comment"),
        ({"name": "k", "publicKey": "PUB", "fingerprint": "SHA256:x"}, "fingerprint"),
        ({"name": 5, "publicKey": "PUB"}, "name"),
        ({"name": None, "publicKey": "PUB"}, "name"),
        ({"name": ["k"], "publicKey": "PUB"}, "name"),
        ({"name": "k", "publicKey": 5}, "publicKey"),
        ({"name": "k", "publicKey": None}, "publicKey"),
        ({"name": "k", "publicKey": ["PUB"]}, "publicKey"),
        ({"name": "k", "publicKey": {"key": "PUB"}}, "publicKey"),
        (["k", "PUB"], "body"),
        ("PUB", "body"),
    ],
)
def test_malformed_bodies(api: Api, user, tmp_path: Path, body: Any, field: str) -> None:
    public_key = pub_line(ed25519(tmp_path))

    def fill(value: Any) -> Any:
        if value == "PUB":
            return public_key
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    before = snapshot()
    answer = envelope(api.post("/v1/ssh-keys", fill(body)), 400, "validation_failed")
    assert field in answer.get("details", {}), answer
    assert snapshot() == before
    assert listed(api) == []


def test_broken_json_and_oversized_body(api: Api, user, tmp_path: Path) -> None:
    line = pub_line(ed25519(tmp_path)).strip()
    before = snapshot()
    envelope(api.call("POST", "/v1/ssh-keys", raw=b'{"name": "k", "publicKey": '), 400, "validation_failed")
    huge = '{"name": "k", "publicKey": "' + line + " " + "c" * (70 * 1024) + '"}'
    envelope(api.call("POST", "/v1/ssh-keys", raw=huge.encode()), 400, "validation_failed")
    assert snapshot() == before


# --------------------------------------------------------------------------- delete


def test_delete_a_key(api: Api, user, clock, tmp_path: Path) -> None:
    keep = add(api, "keep", pub_line(ed25519(tmp_path, "a")))
    clock.advance(1)
    gone = add(api, "gone", pub_line(ed25519(tmp_path, "b")))
    r = api.delete(f"/v1/ssh-keys/{gone['id']}")
    assert r.status == 200 and r.json() == {"ok": True}
    assert listed(api) == [keep]
    before = snapshot()
    envelope(api.delete(f"/v1/ssh-keys/{gone['id']}"), 404, "key_not_found")  # twice
    assert snapshot() == before


def test_delete_unknown_foreign_or_malformed_ids(api: Api, user, clock, tmp_path: Path) -> None:
    mine = add(api, "mine", pub_line(ed25519(tmp_path, "a")))
    other, _ = other_user(clock)
    theirs = add(other, "theirs", pub_line(ed25519(tmp_path, "b")))
    ulid = theirs["id"].removeprefix("key_")
    before = snapshot()
    for key_id in [
        theirs["id"],  # someone else's
        "key_" + "0" * 26,  # well-formed, unknown
        f"rent_{ulid}",  # wrong prefix
        f"usr_{ulid}",
        ulid,  # no prefix
        "key_nope",
        theirs["id"].lower(),
    ]:
        body = envelope(api.delete(f"/v1/ssh-keys/{key_id}"), 404, "key_not_found")
        assert body["message"] == "No such SSH key"
    assert snapshot() == before
    assert listed(other) == [theirs]
    assert listed(api) == [mine]


# --------------------------------------------------------------------------- auth


def test_every_route_needs_a_session(api: Api, user, tmp_path: Path) -> None:
    key = add(api, "mine", pub_line(ed25519(tmp_path, "a")))
    public_key = pub_line(ed25519(tmp_path, "b"))
    before = snapshot()
    anonymous = Api()
    forged = Api()
    forged.cookies = {"sid": "forged"}
    bearer = Api()
    bearer.token = "gpr_forged"
    for client in (anonymous, forged, bearer):
        for body in (
            envelope(client.get("/v1/ssh-keys"), 401, "unauthorized"),
            envelope(client.post("/v1/ssh-keys", {"name": "x", "publicKey": public_key}), 401, "unauthorized"),
            envelope(client.delete(f"/v1/ssh-keys/{key['id']}"), 401, "unauthorized"),
        ):
            assert body["message"] == "Not signed in"
    assert snapshot() == before
    assert listed(api) == [key]


def test_signed_out_session_cannot_use_keys(api: Api, user, tmp_path: Path) -> None:
    key = add(api, "mine", pub_line(ed25519(tmp_path)))
    sid = api.cookies["sid"]
    assert api.post("/v1/auth/logout").status == 200
    stale = Api()
    stale.cookies = {"sid": sid}
    before = snapshot()
    envelope(stale.get("/v1/ssh-keys"), 401, "unauthorized")
    envelope(stale.delete(f"/v1/ssh-keys/{key['id']}"), 401, "unauthorized")
    assert snapshot() == before


def test_origin_check_on_cookie_mutations(api: Api, user, tmp_path: Path) -> None:
    key = add(api, "mine", pub_line(ed25519(tmp_path, "a")))
    evil = {"origin": "https://evil.example"}
    before = snapshot()
    envelope(api.post("/v1/ssh-keys", {"name": "x", "publicKey": pub_line(ed25519(tmp_path, "b"))},
                      headers=evil), 403, "forbidden")
    envelope(api.delete(f"/v1/ssh-keys/{key['id']}", headers=evil), 403, "forbidden")
    assert snapshot() == before
    assert api.get("/v1/ssh-keys", headers=evil).status == 200  # reads pass
    ok = api.post("/v1/ssh-keys", {"name": "y", "publicKey": pub_line(ed25519(tmp_path, "c"))},
                  headers={"origin": "https://dash.gpurent.test"})
    assert ok.status == 200, ok.body


def test_keys_work_with_a_personal_api_token(api: Api, user, clock, tmp_path: Path) -> None:
    token = api.post("/v1/auth/tokens", {"name": "ci"}).json()["token"]
    bot = Api()
    bot.token = token
    key = add(bot, "from ci", pub_line(ed25519(tmp_path)))
    assert listed(api) == [key]
    assert bot.delete(f"/v1/ssh-keys/{key['id']}").json() == {"ok": True}
    assert listed(api) == []


# --------------------------------------------------------------------------- injection


def test_public_keys_are_the_full_lines_a_launch_injects(api: Api, user, clock, tmp_path: Path) -> None:
    privates = [
        ed25519(tmp_path, "a", comment="alice@laptop"),
        keygen(tmp_path, "b", "-t", "rsa", "-b", "2048", comment="alice@desktop"),
        keygen(tmp_path, "c", "-t", "ecdsa", "-b", "384", comment=""),
    ]
    lines = [pub_line(p).strip() for p in privates]
    added = []
    for i, line in enumerate(lines):
        added.append(add(api, f"k{i}", line + "\n"))
        clock.advance(1)
    other, other_u = other_user(clock)
    add(other, "theirs", pub_line(ed25519(tmp_path, "d", comment="bob@box")))

    got = ssh_keys.public_keys(user["id"])
    assert sorted(got) == sorted(lines)
    assert all("\n" not in k and "\r" not in k for k in got)
    assert any(k.endswith(" alice@laptop") for k in got)
    assert ssh_keys.public_keys(other_u["id"]) == [pub_line(tmp_path / "d").strip()]

    assert api.delete(f"/v1/ssh-keys/{added[0]['id']}").status == 200
    assert sorted(ssh_keys.public_keys(user["id"])) == sorted(lines[1:])


def test_a_user_without_keys_injects_nothing(api: Api, user) -> None:
    assert ssh_keys.public_keys(user["id"]) == []
