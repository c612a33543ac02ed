"""Settings never show a credential in their repr (logs, tracebacks, debuggers print it)."""

from __future__ import annotations

from durable_orchestrator.settings import Settings

SECRETS = {
    "openai_api_key": "sk-live-0penai-secret",
    "database_url": "postgresql://app:pg-pass-secret@db.internal:5432/orchestrator",
    "redis_url": "redis://:redis-pass-secret@cache.internal:6379/0",
    "jwt_secret": "jwt-secret-" + "x" * 32,
    "webhook_secret": "webhook-secret-value",
    "api_key": "orch_abcd1234_cli-key-secret",
}


def test_repr_and_str_show_no_secret() -> None:
    settings = Settings(**SECRETS)
    for shown in (repr(settings), str(settings)):
        for name, value in SECRETS.items():
            assert value not in shown, name
        assert "pg-pass-secret" not in shown and "redis-pass-secret" not in shown
    assert "model='gpt-4o-mini'" in repr(settings)  # the rest is still there to debug with
    assert settings.openai_api_key == SECRETS["openai_api_key"]  # and the values work


def test_every_credential_field_is_kept_out_of_repr() -> None:
    hidden = {name for name, field in Settings.model_fields.items() if field.repr is False}
    assert set(SECRETS) <= hidden
