"""Settings: defaults, sources, rules, and error messages that never echo a value."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from aisd.settings import Settings, SettingsError, env_name, load_settings

EXAMPLE_ENV = Path(__file__).parents[2] / "aisd.example.env"
SECRETISH = "sk_live_SECRET_9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("AISD_"):
            monkeypatch.delenv(name)
    for name in ("STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def write_env(tmp_path: Path, text: str) -> str:
    path = tmp_path / "aisd.env"
    path.write_text(text)
    return str(path)


def test_defaults_in_sandbox() -> None:
    s = load_settings(sandbox=True)
    assert s.api_url == "https://test.api.kontomatik.com"
    assert s.api_key is None
    assert s.db_path == Path("aisd.db")
    assert s.socket_path == Path("aisd.sock")
    assert s.socket_mode == 0o660
    assert s.allowed_uids == frozenset({os.getuid(), 0})
    assert s.allowed_gids == frozenset()
    assert (s.refreshes_per_day, s.access_days, s.max_running_commands) == (4, 180, 8)
    assert (s.poll_min_seconds, s.poll_max_seconds) == (2.0, 5.0)
    assert s.initial_history_days == 365
    assert s.expiry_warning_days == (14, 7, 3, 1)
    assert (s.log_format, s.log_level) == ("json", "info")
    assert (s.raw_retention_days, s.retention_days) == (90, None)
    assert s.max_reply_bytes == 64 * 1024 * 1024
    assert s.http_timeout_seconds == 30.0
    assert s.refresh_overlap_days == 3
    assert (s.socket_idle_timeout_seconds, s.socket_max_connections) == (30.0, 64)
    assert s.planner_tick_seconds == 30.0


def test_systemd_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/aisd")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/aisd:/run/other")
    s = load_settings(sandbox=True)
    assert s.db_path == Path("/var/lib/aisd/aisd.db")
    assert s.socket_path == Path("/run/aisd/aisd.sock")


def test_api_key_required_unless_sandbox() -> None:
    with pytest.raises(SettingsError, match="AISD_API_KEY is required"):
        load_settings()


def test_env_file_beneath_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = write_env(
        tmp_path,
        "AISD_API_KEY=from-file\nAISD_REFRESHES_PER_DAY=2\nUNRELATED=1\n",
    )
    monkeypatch.setenv("AISD_REFRESHES_PER_DAY", "3")
    s = load_settings(env)
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "from-file"
    assert s.refreshes_per_day == 3
    assert "from-file" not in repr(s)


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--env-file"):
        load_settings(str(tmp_path / "nope.env"), sandbox=True)


def test_api_key_from_credentials_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "aisd_api_key").write_text("cred-key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    s = load_settings()
    assert s.api_key is not None
    assert s.api_key.get_secret_value() == "cred-key"


def test_missing_credentials_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "gone"))
    with pytest.raises(SettingsError, match="CREDENTIALS_DIRECTORY"):
        load_settings(sandbox=True)


def test_socket_mode_octal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISD_SOCKET_MODE", "0600")
    assert load_settings(sandbox=True).socket_mode == 0o600
    for bad in ("0999", "1777", "rw", "-1"):
        monkeypatch.setenv("AISD_SOCKET_MODE", bad)
        with pytest.raises(SettingsError, match="AISD_SOCKET_MODE: must be an octal file mode"):
            load_settings(sandbox=True)


def test_allowed_ids_names_and_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    root = pwd.getpwuid(0).pw_name
    monkeypatch.setenv("AISD_ALLOWED_UIDS", f"{root}, 1234")
    monkeypatch.setenv("AISD_ALLOWED_GIDS", "0,55")
    s = load_settings(sandbox=True)
    assert s.allowed_uids == frozenset({0, 1234})
    assert s.allowed_gids == frozenset({0, 55})


def test_unknown_user_names_the_setting_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISD_ALLOWED_UIDS", SECRETISH)
    with pytest.raises(SettingsError) as info:
        load_settings(sandbox=True)
    assert "AISD_ALLOWED_UIDS" in str(info.value)
    assert SECRETISH not in str(info.value)


def test_expiry_warning_days_sorted_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISD_EXPIRY_WARNING_DAYS", "1, 30,7,7")
    assert load_settings(sandbox=True).expiry_warning_days == (30, 7, 1)
    for bad in ("0", "x", "-3", ","):
        monkeypatch.setenv("AISD_EXPIRY_WARNING_DAYS", bad)
        with pytest.raises(SettingsError, match="AISD_EXPIRY_WARNING_DAYS"):
            load_settings(sandbox=True)


def test_poll_min_not_above_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISD_POLL_MIN_SECONDS", "4")
    monkeypatch.setenv("AISD_POLL_MAX_SECONDS", "3")
    with pytest.raises(SettingsError, match="AISD_POLL_MIN_SECONDS must not exceed"):
        load_settings(sandbox=True)


@pytest.mark.parametrize(
    "name",
    [
        "AISD_POLL_MIN_SECONDS",
        "AISD_REFRESHES_PER_DAY",
        "AISD_LOG_FORMAT",
        "AISD_LOG_LEVEL",
        "AISD_API_URL",
        "AISD_RETENTION_DAYS",
        "AISD_SOCKET_MODE",
        "AISD_ALLOWED_GIDS",
    ],
)
def test_bad_value_is_named_never_echoed(tmp_path: Path, name: str) -> None:
    env = write_env(tmp_path, f"{name}={SECRETISH}\n")
    with pytest.raises(SettingsError) as info:
        load_settings(env, sandbox=True)
    text = str(info.value)
    assert name in text
    assert SECRETISH not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_unknown_aisd_name_is_rejected(tmp_path: Path) -> None:
    env = write_env(tmp_path, "AISD_POLL_MIN_SECOND=3\n")
    with pytest.raises(SettingsError, match="AISD_POLL_MIN_SECOND "):
        load_settings(env, sandbox=True)


@hsettings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=-5, max_value=200))
def test_ranges(n: int) -> None:
    for field, low, high in (
        ("refreshes_per_day", 1, 4),
        ("access_days", 1, 180),
        ("max_running_commands", 1, 8),
    ):
        if low <= n <= high:
            assert getattr(Settings.model_validate({field: n}), field) == n
        else:
            with pytest.raises(ValueError, match=field):
                Settings.model_validate({field: n})


@hsettings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.floats(min_value=0, max_value=8, allow_nan=False),
    st.floats(min_value=0, max_value=8, allow_nan=False),
)
def test_poll_rule(low: float, high: float) -> None:
    valid = 2 <= low <= high <= 5
    if valid:
        s = Settings(poll_min_seconds=low, poll_max_seconds=high)
        assert (s.poll_min_seconds, s.poll_max_seconds) == (low, high)
    else:
        with pytest.raises(ValueError, match="poll"):
            Settings(poll_min_seconds=low, poll_max_seconds=high)


def test_example_env_documents_every_setting_with_its_default(tmp_path: Path) -> None:
    text = EXAMPLE_ENV.read_text()
    documented = dict(re.findall(r"^# (AISD_\w+)=(.*)$", text, re.MULTILINE))
    assert set(documented) == {env_name(f) for f in Settings.model_fields}
    # Uncommenting every line as it stands must give the defaults back.
    env = write_env(tmp_path, "\n".join(f"{k}={v}" for k, v in documented.items()))
    assert load_settings(env, sandbox=True) == load_settings(sandbox=True)


def test_a_postgresql_url_and_its_password_from_the_credentials_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "aisd_database_password").write_text(SECRETISH)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("AISD_DATABASE_URL", "postgresql://aisd@db.internal:5432/aisd")
    s = load_settings(sandbox=True)
    assert s.database_url is not None
    assert s.database_url.get_secret_value() == "postgresql://aisd@db.internal:5432/aisd"
    assert s.database_password is not None
    assert s.database_password.get_secret_value() == SECRETISH
    # Neither the URL nor the password shows in the settings' text.
    assert SECRETISH not in repr(s)
    assert "db.internal" not in repr(s)


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (f"postgresql://aisd:{SECRETISH}@db.internal/aisd", "must not contain a password"),
        (f"mysql://{SECRETISH}@db.internal/aisd", "postgresql://"),
        (f"postgresql://aisd@[{SECRETISH}/aisd", "postgresql://"),
    ],
)
def test_a_bad_database_url_is_named_not_echoed(
    monkeypatch: pytest.MonkeyPatch, url: str, rule: str
) -> None:
    monkeypatch.setenv("AISD_DATABASE_URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings(sandbox=True)
    message = str(info.value)
    assert "AISD_DATABASE_URL" in message
    assert rule in message
    assert SECRETISH not in message
    assert "db.internal" not in message
