import pytest
from pydantic import ValidationError

from core.settings import AgentRuntimeAdapter, Settings, TelephonyAdapter


def test_local_adapters_are_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("TELEPHONY", "VOICE_AGENT", "AGENT_RUNTIME", "ARCHIVE_STORE", "MAILER"):
        monkeypatch.delenv(f"DEEPCLAW_{key}", raising=False)
    settings = Settings(_env_file=None)
    assert {settings.telephony, settings.voice_agent, settings.agent_runtime, settings.archive_store, settings.mailer} == {"local"}


def test_environment_selects_real_adapters_and_remote_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCLAW_TELEPHONY", "twilio")
    monkeypatch.setenv("DEEPCLAW_AGENT_RUNTIME", "kubernetes")
    monkeypatch.setenv("DEEPCLAW_TEMPORAL_ADDRESS", "deepclaw.a1b2c.tmprl.cloud:7233")
    monkeypatch.setenv("DEEPCLAW_TEMPORAL_API_KEY", "secret-key")
    monkeypatch.setenv("DEEPCLAW_DATABASE_URL", "postgresql+asyncpg://app:pw@db.example:25060/deepclaw?ssl=require")
    settings = Settings(_env_file=None)
    assert settings.telephony is TelephonyAdapter.TWILIO
    assert settings.agent_runtime is AgentRuntimeAdapter.KUBERNETES
    assert settings.temporal_port == 7233
    assert settings.temporal_api_key is not None and "secret-key" not in repr(settings)
    assert settings.database_url.endswith("?ssl=require")


def test_unknown_adapter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCLAW_MAILER", "pigeon")
    with pytest.raises(ValidationError, match="mailer"):
        Settings(_env_file=None)


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    documented = Path(__file__).parents[1].joinpath(".env.example").read_text()
    missing = [name for name in Settings.model_fields if f"DEEPCLAW_{name.upper()}" not in documented]
    assert not missing, f".env.example lacks {missing}"
