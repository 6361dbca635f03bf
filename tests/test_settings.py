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


PRODUCTION = {"DEEPCLAW_TELEPHONY": "twilio", "DEEPCLAW_VOICE_AGENT": "deepgram",
              "DEEPCLAW_PLATFORM_SECRET": "p" * 40, "DEEPCLAW_TWILIO_AUTH_TOKEN": "t" * 32,
              "DEEPCLAW_DATABASE_URL": "postgresql+asyncpg://app:s3cret-s3cret-s3cret@db.example:25060/deepclaw",
              "DEEPCLAW_PUBLIC_BASE_URL": "https://api.example.com",
              "DEEPCLAW_VOICE_PUBLIC_BASE_URL": "https://voice.example.com",
              "DEEPCLAW_MEDIA_PUBLIC_URL": "wss://voice.example.com/twilio/media",
              "DEEPCLAW_ENCRYPTION_KEYS": "k1:" + "A" * 43}


def test_local_settings_have_nothing_to_refuse() -> None:
    assert Settings(_env_file=None).deployment_problems() == []


def test_real_adapters_need_real_secrets_and_public_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in PRODUCTION.items():
        monkeypatch.setenv(key, value)
    assert Settings(_env_file=None).deployment_problems() == []
    cases = {"DEEPCLAW_PLATFORM_SECRET": "local-development-secret", "DEEPCLAW_TWILIO_AUTH_TOKEN": "short",
             "DEEPCLAW_DATABASE_URL": "postgresql+asyncpg://postgres@db.example/deepclaw",
             "DEEPCLAW_PUBLIC_BASE_URL": "", "DEEPCLAW_MEDIA_PUBLIC_URL": "", "DEEPCLAW_ENCRYPTION_KEYS": ""}
    for key, bad in cases.items():
        with monkeypatch.context() as case:
            case.setenv(key, bad)
            problems = Settings(_env_file=None).deployment_problems()
            assert len(problems) == 1 and problems[0].startswith(key), (key, problems)
    monkeypatch.delenv("DEEPCLAW_PLATFORM_SECRET")
    with pytest.raises(SystemExit, match="DEEPCLAW_PLATFORM_SECRET is the development default"):
        Settings(_env_file=None).require_deployable()


def test_every_process_refuses_to_start_with_a_development_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("DEEPCLAW_")}, **PRODUCTION,
           "DEEPCLAW_TWILIO_AUTH_TOKEN": "local-auth-token"}
    for command in ("api", "voice", "worker"):
        ran = subprocess.run([sys.executable, "-m", "core.cli", command], env=env, capture_output=True, text=True,
                             timeout=60)
        assert ran.returncode != 0 and "DEEPCLAW_TWILIO_AUTH_TOKEN" in ran.stderr, (command, ran.stderr[-500:])


async def test_twilio_rest_base_url_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCLAW_TELEPHONY", "twilio")
    assert Settings(_env_file=None).twilio_api_base_url is None  # Twilio itself
    monkeypatch.setenv("DEEPCLAW_TWILIO_API_URL", "https://twilio-proxy.example.com/")
    assert Settings(_env_file=None).twilio_api_base_url == "https://twilio-proxy.example.com"
    monkeypatch.setenv("DEEPCLAW_TWILIO_EDGE", "dublin")
    monkeypatch.setenv("DEEPCLAW_TWILIO_REGION", "ie1")
    from core import composition

    telephony = composition.telephony(Settings(_env_file=None))
    assert (telephony.client.edge, telephony.client.region) == ("dublin", "ie1")
    await telephony.close()
