"""Building adapters from settings, and the shared pieces of base.py."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from gpurent.providers.base import ProviderError, bootstrap_script, is_ours, reachable_status
from gpurent.providers.lambdacloud import LambdaAdapter
from gpurent.providers.registry import build_adapters
from gpurent.providers.runpod import RunPodAdapter
from gpurent.providers.vast import VastAdapter


def test_builds_every_provider_with_a_key():
    adapters = build_adapters({
        "VAST_API_KEY": "v", "VAST_BASE_URL": "http://127.0.0.1:1",
        "runpod_api_key": SecretStr("r"),
        "LAMBDA_API_KEY": "l", "LAMBDA_SSH_KEY_NAME": "platform",
        "PROVIDER_READ_TIMEOUT_SECONDS": "7.5", "PROVIDER_DISK_GB": "80",
    })
    assert list(adapters) == ["vast", "runpod", "lambda"]
    vast = adapters["vast"]
    assert isinstance(vast, VastAdapter)
    assert vast.http.base_url == "http://127.0.0.1:1"
    assert vast.http.headers["Authorization"] == "Bearer v"
    assert vast.http.policy.read_timeout == 7.5 and vast.disk_gb == 80
    rp = adapters["runpod"]
    assert isinstance(rp, RunPodAdapter)
    assert rp.http.base_url == "https://api.runpod.io" and rp.http.headers["Authorization"] == "Bearer r"
    lam = adapters["lambda"]
    assert isinstance(lam, LambdaAdapter)
    assert lam.http.base_url == "https://cloud.lambda.ai/api/v1" and lam.ssh_key_name == "platform"


def test_skips_providers_without_a_key():
    assert list(build_adapters({"RUNPOD_API_KEY": "r", "VAST_API_KEY": ""})) == ["runpod"]


def test_providers_list_limits():
    settings = {"VAST_API_KEY": "v", "RUNPOD_API_KEY": "r", "PROVIDERS": "runpod"}
    assert list(build_adapters(settings)) == ["runpod"]
    with pytest.raises(ValueError):
        build_adapters({**settings, "PROVIDERS": "runpod,aws"})


def test_lambda_needs_its_platform_key_name():
    with pytest.raises(ValueError):
        build_adapters({"LAMBDA_API_KEY": "l"})


def test_provider_error_text():
    e = ProviderError("runpod", "capacity", "no GPUs")
    assert str(e) == "runpod: no GPUs" and e.kind == "capacity" and e.provider == "runpod"


def test_labels_and_reachability():
    assert is_ours("rent_01J") and not is_ours("my-box") and not is_ours(None) and not is_ours("")
    assert reachable_status(True, "1.2.3.4", 22) == "running"
    assert reachable_status(True, "1.2.3.4", None) == "provisioning"
    assert reachable_status(True, None, 22) == "provisioning"
    assert reachable_status(False, "1.2.3.4", 22) == "provisioning"


def test_bootstrap_script_quotes_keys_and_command():
    script = bootstrap_script("vast", ("ssh-ed25519 AAAA a@b", "", "ssh-rsa BBBB it's me"), "echo $HOME; sleep 1")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert "'ssh-ed25519 AAAA a@b'" in script
    assert "'ssh-rsa BBBB it'\"'\"'s me'" in script
    assert "nohup sh -c 'echo $HOME; sleep 1'" in script
    assert script.count(">> /root/.ssh/authorized_keys") == 2  # the empty key is skipped


def test_bootstrap_script_refuses_multiline_keys():
    with pytest.raises(ProviderError) as e:
        bootstrap_script("lambda", ("ssh-ed25519 AAAA\nmalicious",), None)
    assert e.value.kind == "invalid"


def test_every_provider_has_its_spec_its_names_and_a_simulator():
    import importlib

    from gpurent.providers import registry
    from infra.simulators import SIMULATORS

    assert registry.codes() == ("vast", "runpod", "lambda")
    for p in registry.PROVIDERS:
        assert registry.spec(p.code).code == p.code
        importlib.import_module(f"{p.module}_names")  # its family/region names live beside it
    assert tuple(sim.code for sim in SIMULATORS) == registry.codes()


def test_a_fourth_provider_is_one_module_and_one_registry_line(monkeypatch):
    from gpurent.providers import registry
    from tests.unit.providers.fourth_provider import AcmeAdapter

    line = registry.Provider("acme", "tests.unit.providers.fourth_provider", provision_seconds=30)
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS, line))
    settings = {"ACME_API_KEY": "k", "ACME_PROJECT": "p1", "PROVIDER_DISK_GB": "70", "LAMBDA_TASK_ROOT": "/var"}
    built = build_adapters(settings)
    assert list(built) == ["acme"]
    acme = built["acme"]
    assert isinstance(acme, AcmeAdapter)
    assert acme.config.api_key.get_secret_value() == "k" and acme.config.project == "p1" and acme.ctx.disk_gb == 70
    assert registry.provision_seconds("acme") == 30
    assert registry.env_settings({**settings, "OTHER": "x", "ACME_EMPTY": ""}) == settings  # <CODE>_*, PROVIDER_*
    with pytest.raises(ValueError):
        build_adapters({"ACME_API_KEY": "k"})  # its own settings model is validated: ACME_PROJECT is required
    registry.set_adapters(built)
    try:
        assert registry.adapter("acme") is acme
        with pytest.raises(ProviderError) as e:
            registry.adapter("vast")
        assert e.value.kind == "auth"
    finally:
        registry.set_adapters(None)


def test_shared_provider_settings_are_validated():
    with pytest.raises(ValueError):
        build_adapters({"VAST_API_KEY": "v", "PROVIDER_READ_TIMEOUT_SECONDS": "soon"})
    with pytest.raises(ValueError):
        build_adapters({"VAST_API_KEY": "v", "PROVIDER_DISK_GB": "0"})
