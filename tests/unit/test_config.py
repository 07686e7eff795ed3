"""Settings: one validated model, no silent defaults for what a deployment must set."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpurent import config
from gpurent.billing import gateway

DEPLOYED = {
    "STAGE": "prod", "IDENTITY_TABLE": "i", "MONEY_TABLE": "m", "LEDGER_TABLE": "l", "CATALOG_TABLE": "c",
    "PUBLIC_URL": "https://gpurent.example/", "MAIL_FROM": "no-reply@gpurent.example",
    "TIMER_QUEUE_URL": "https://sqs.example/q", "CURSOR_KEY_SECRET_ARN": "arn:aws:secretsmanager:x",
    "STRIPE_SECRET_KEY_PARAM": "/gpurent/stripe-secret-key", "STRIPE_WEBHOOK_SECRET_PARAM": "/gpurent/whsec",
    "STRIPE_PUBLISHABLE_KEY": "pk_live_x",
}


def test_a_deployment_gives_every_setting_it_must() -> None:
    s = config.load_settings(DEPLOYED)
    assert (s.stage, s.money_table, s.public_url, s.timer_queue_url) == (
        "prod", "m", "https://gpurent.example", "https://sqs.example/q")
    assert s.stripe.enabled and s.stripe.secret_key_param == "/gpurent/stripe-secret-key"
    assert s.stripe.publishable_key == "pk_live_x" and s.stripe.secret_key is None
    assert s.cursor_key_secret_arn == "arn:aws:secretsmanager:x"


@pytest.mark.parametrize("name", ["MONEY_TABLE", "PUBLIC_URL", "MAIL_FROM", "TIMER_QUEUE_URL",
                                  "CURSOR_KEY_SECRET_ARN", "STRIPE_WEBHOOK_SECRET_PARAM", "STRIPE_PUBLISHABLE_KEY"])
def test_a_deployment_missing_a_setting_fails_loudly_naming_it(name: str) -> None:
    env = {k: v for k, v in DEPLOYED.items() if k != name}
    with pytest.raises(config.MissingSettings) as e:
        config.load_settings(env)
    assert name in str(e.value)


def test_no_stage_is_a_deployment_not_a_silent_local() -> None:
    with pytest.raises(config.MissingSettings) as e:
        config.load_settings({})
    assert "stage 'prod'" in str(e.value) and "MONEY_TABLE" in str(e.value)


def test_billing_may_be_off_in_a_deployment_but_never_half_on() -> None:
    off = {k: v for k, v in DEPLOYED.items() if not k.startswith("STRIPE_")}
    assert not config.load_settings(off).stripe.enabled


@pytest.mark.parametrize("stage", ["local", "test"])
def test_local_and_test_stages_fall_back_to_local_defaults(stage: str) -> None:
    s = config.load_settings({"STAGE": stage})
    assert (s.money_table, s.public_url, s.mail_from) == ("gpurent-money", "http://127.0.0.1:3000",
                                                          "no-reply@gpurent.local")
    assert s.timer_queue_url is None and s.cursor_key is None and not s.stripe.enabled


def test_the_stripe_gateway_reads_its_settings_through_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_x")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_x")
    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", "pk_test_x")
    monkeypatch.delenv("STRIPE_SECRET_KEY_PARAM", raising=False)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET_PARAM", raising=False)
    gateway.reset()
    try:
        assert gateway.enabled() and gateway.publishable_key() == "pk_test_x"
        assert gateway.webhook_secret() == "whsec_x"
        assert "sk_test_x" not in repr(config.settings())  # a secret is never printed
        monkeypatch.delenv("STRIPE_SECRET_KEY")
        gateway.reset()
        assert not gateway.enabled()
    finally:
        monkeypatch.undo()
        gateway.reset()


def test_shard_counts_are_eight_deployed_two_locally_and_checked() -> None:
    """A deployment keeps the 8 shards its data was written with unless told otherwise (the
    template sets neither count); the local and test stages use 2; a bad count is refused."""
    deployed = config.load_settings(DEPLOYED)
    assert (deployed.active_shards, deployed.outbox_shards) == (8, 8)
    local = config.load_settings({"STAGE": "local"})
    assert (local.active_shards, local.outbox_shards) == (config.DEV_SHARDS, config.DEV_SHARDS) == (2, 2)
    assert config.load_settings({**DEPLOYED, "ACTIVE_SHARDS": "4"}).active_shards == 4
    for bad in ("0", "65", "x", "2.5"):
        with pytest.raises(ValueError, match="active_shards"):
            config.load_settings({**DEPLOYED, "ACTIVE_SHARDS": bad})
    template = (Path(__file__).resolve().parents[2] / "template.yaml").read_text()
    assert "ACTIVE_SHARDS" not in template and "OUTBOX_SHARDS" not in template


def test_meters_on_the_wallet_are_on_unless_switched_off_and_a_deployment_starts_off() -> None:
    """The local and test stages keep running rentals' meters on the wallet; a deployment gets
    the template's `MetersOnWallet`, "0" unless set: code older than this release reads a meter
    from the rental only, and a deployment runs old and new code side by side for a while (a
    canary, an automatic rollback), so it is switched on once the release is fully live."""
    assert config.load_settings({"STAGE": "local"}).meters_on_wallet
    assert config.load_settings(DEPLOYED).meters_on_wallet
    assert not config.load_settings({**DEPLOYED, "METERS_ON_WALLET": "0"}).meters_on_wallet
    from infra.local import template

    t = template.load()
    assert t["Parameters"]["MetersOnWallet"]["Default"] == "0"
    assert t["Parameters"]["MetersOnWallet"]["AllowedValues"] == ["0", "1"]
    assert t["Globals"]["Function"]["Environment"]["Variables"]["METERS_ON_WALLET"] == {"Ref": "MetersOnWallet"}
