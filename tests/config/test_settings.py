"""Settings: env prefix and nesting, YAML, precedence, secrets, failing fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from quantcrew.config.settings import SettingsError, load_settings


def test_defaults_bind_loopback_and_fill_paths_under_home(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    assert s.server.host == "127.0.0.1"
    assert s.registry_db == tmp_path / "registry.db"
    assert s.artifacts_dir == tmp_path / "artifacts"
    assert s.runs_db == tmp_path / "runs.db"
    assert s.server.api_key is None


def test_env_nested_delimiter_sets_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTCREW_SERVER__PORT", "9123")
    monkeypatch.setenv("QUANTCREW_CLIENT__URL", "http://127.0.0.1:9123/")
    s = load_settings()
    assert s.server.port == 9123
    assert s.client.url == "http://127.0.0.1:9123"


def test_api_key_is_secret_and_shared_with_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTCREW_SERVER__API_KEY", "topsecret")
    s = load_settings()
    assert s.server.api_key is not None
    assert s.server.api_key.get_secret_value() == "topsecret"
    assert "topsecret" not in repr(s)
    assert s.client.api_key is not None and s.client.api_key.get_secret_value() == "topsecret"


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_api_key_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("QUANTCREW_SERVER__API_KEY", blank)
    with pytest.raises(SettingsError, match="QUANTCREW_SERVER__API_KEY") as caught:
        load_settings()
    assert "blank" in str(caught.value)


def test_ops_routes_are_protected_and_open_binds_refused_by_default(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path)
    assert s.server.protect_ops is True and s.server.insecure is False


def test_yaml_file_is_read_and_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "qc.yaml"
    cfg.write_text("server:\n  port: 9000\n  max_rows: 500\ncrew:\n  llm: ollama/llama3\n")
    monkeypatch.setenv("QUANTCREW_SERVER__PORT", "9001")
    s = load_settings(cfg)
    assert s.server.port == 9001  # env > yaml
    assert s.server.max_rows == 500
    assert s.crew.llm == "ollama/llama3"


def test_yaml_file_from_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "qc.yaml"
    cfg.write_text("data:\n  max_gap_days: 12\n")
    monkeypatch.setenv("QUANTCREW_CONFIG_FILE", str(cfg))
    assert load_settings().data.max_gap_days == 12


def test_invalid_value_fails_with_setting_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTCREW_SERVER__DEVICE", "tpu")
    monkeypatch.setenv("QUANTCREW_CLIENT__URL", "ftp://x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    text = str(info.value)
    assert "server.device (QUANTCREW_SERVER__DEVICE)" in text
    assert "client.url (QUANTCREW_CLIENT__URL)" in text


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "qc.yaml"
    cfg.write_text("server:\n  prot: 9000\n")
    with pytest.raises(SettingsError, match="server.prot"):
        load_settings(cfg)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_server_cli_exits_2_with_message_on_bad_settings(tmp_path: Path) -> None:
    env = {"QUANTCREW_SERVER__PORT": "-5", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "quantcrew.ml_server"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "QUANTCREW_SERVER__PORT" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_getenv_outside_config() -> None:
    root = Path(__file__).resolve().parents[2] / "quantcrew"
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if "config" not in p.relative_to(root).parts
        and ("os.getenv" in p.read_text() or "os.environ.get" in p.read_text() or "environ[" in p.read_text())
    ]
    assert offenders == []


def test_secret_files_named_like_variables_set_nested_settings_below_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "quantcrew_server__api_key").write_text("key-from-a-file\n")  # a trailing newline is stripped
    (secrets / "QUANTCREW_CLIENT__API_KEY").write_text("client-key")  # names match whatever their case
    (secrets / "api_key").write_text("named like no setting: ignored")
    monkeypatch.setenv("QUANTCREW_SECRETS_DIR", str(secrets))
    s = load_settings()
    assert s.server.api_key is not None and s.server.api_key.get_secret_value() == "key-from-a-file"
    assert s.client.api_key is not None and s.client.api_key.get_secret_value() == "client-key"
    monkeypatch.setenv("QUANTCREW_SERVER__API_KEY", "key-from-env")
    env_wins = load_settings().server.api_key
    assert env_wins is not None and env_wins.get_secret_value() == "key-from-env"


def test_a_blank_secret_file_or_a_missing_secrets_folder_is_refused_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quantcrew_server__api_key").write_text("\n")
    monkeypatch.setenv("QUANTCREW_SECRETS_DIR", str(tmp_path))
    with pytest.raises(SettingsError, match="QUANTCREW_SERVER__API_KEY.*blank"):
        load_settings()
    monkeypatch.setenv("QUANTCREW_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="secrets folder not found: .*missing.*QUANTCREW_SECRETS_DIR"):
        load_settings()
