"""Config loading: interpolation, located errors (all at once), translator options, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import ConfigError, default_config, load_file, load_settings


def test_issue_example_loads_with_interpolation() -> None:
    raw = {
        "server": {"host": "127.0.0.1", "port": 8000},
        "backends": {
            "kobold-box": {"type": "openai", "url": "http://gpu-box.lan:5001/v1"},
            "cloud": {"type": "openai", "api_key": "${CLOUD_KEY}"},
            "horde": {"type": "openai", "api_key": "${HORDE_API_KEY:-0000000000}"},
        },
        "models": [{"name": "sonnet", "backend": "cloud", "model": "up-model", "params": {"max_tokens": 1024}}],
    }
    settings = load_settings(raw, env={"CLOUD_KEY": "sk-abcdef"})
    assert settings.backends["cloud"].api_key == "sk-abcdef"
    assert settings.backends["horde"].api_key == "0000000000"
    assert settings.backends["cloud"].url == "https://api.openai.com/v1"  # the translator's default
    assert settings.models[0].params == {"max_tokens": 1024}
    assert "sk-abcdef" not in repr(settings) and "sk-abcdef" in settings.secrets


def test_every_problem_is_reported_with_its_location() -> None:
    raw = {
        "server": {"port": "eighty", "colour": "blue"},
        "backends": {
            "a": {"type": "nosuch"},
            "b": {"type": "openai", "api_key": "${MISSING_KEY}"},
            "c": {"type": "mock", "tokens_per_second": -1, "typo_option": 1},
            "d/e": {"type": "mock"},
        },
        "models": [
            {"name": "x", "backend": "zzz", "model": "m"},
            {"name": "y", "backend": "c"},
            {"name": "z", "backend": "b", "model": "m", "bogus": 1},
        ],
        "extra": {},
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(raw, env={})
    problems = "\n".join(caught.value.problems)
    for expected in (
        "server.port:",
        "server.colour: unknown key",
        "backends.a.type: unknown backend type 'nosuch'; valid types: ",
        "mock",
        "backends.b.api_key: environment variable MISSING_KEY is not set",
        "backends.c.tokens_per_second:",
        "backends.c.typo_option: unknown key",
        "backends.d/e: a backend name cannot contain '/'",
        "models[0].backend: no backend named 'zzz'",
        "models[1].model: Field required",
        "models[2].bogus: unknown key",
        "extra: unknown section",
    ):
        assert expected in problems, (expected, problems)


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("backends:\n  a: {type: mock\n")
    with pytest.raises(ConfigError) as caught:
        load_file(path, env={})
    assert caught.value.problems[0].startswith(f"{path}:")
    assert "not valid YAML" in caught.value.problems[0]


def test_embedded_default_serves_mock_and_clouds_with_keys_only() -> None:
    bare = load_settings(default_config({}), env={})
    assert "mock" in bare.backends and "openai" not in bare.backends
    assert [m.name for m in bare.models] == ["mock"]
    env = {"OPENAI_API_KEY": "sk-1111", "OPENROUTER_API_KEY": "sk-or-2222"}
    with_keys = load_settings(default_config(env), env=env)
    assert with_keys.backends["openai"].api_key == "sk-1111"
    assert with_keys.backends["openai"].options == {"forward_unknown": False}
    assert with_keys.backends["openrouter"].url == "https://openrouter.ai/api/v1"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], capture_output=True, text=True, timeout=60)


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("backends:\n  mock: {type: mock}\nmodels:\n  - {name: m, backend: mock, model: lorem}\n")
    result = run_cli("check-config", str(good))
    assert result.returncode == 0 and "OK" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  x: {type: nosuch}\n  y: {type: mock, speed: 3}\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 1
    assert "2 problem(s)" in result.stderr
    assert "backends.x.type" in result.stderr and "backends.y.speed: unknown key" in result.stderr


def test_secrets_in_translator_options_and_auth_headers_are_collected_for_redaction() -> None:
    raw = {
        "backends": {
            "tabby": {"type": "tabby", "url": "http://127.0.0.1:5000", "admin_key": "admin-secret-999"},
            "custom": {"type": "openai", "url": "http://x/v1", "headers": {"X-Api-Key": "hdr-secret-777", "X-Trace": "on"}},
        }
    }
    settings = load_settings(raw, env={})
    assert "admin-secret-999" in settings.secrets and "hdr-secret-777" in settings.secrets
    assert "on" not in settings.secrets
