"""Settings from the environment: defaults, and a clear ConfigError for a value that cannot work."""

from __future__ import annotations

import pytest

from userboard.config import ConfigError, Settings


def test_defaults_are_one_process_on_sqlite():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///userboard.db"
    assert settings.message_queue is None
    assert settings.heartbeat_seconds == 2.0
    assert settings.change_log_size == 10000


def test_change_log_min_age_is_read():
    assert Settings.from_env({}).change_log_min_age == 60
    assert Settings.from_env({"USERBOARD_CHANGE_LOG_MIN_AGE": "0"}).change_log_min_age == 0


def test_socket_max_queued_is_read():
    assert Settings.from_env({}).socket_max_queued == 5000
    assert Settings.from_env({"USERBOARD_SOCKET_MAX_QUEUED": "200"}).socket_max_queued == 200


def test_heartbeat_seconds_is_read():
    assert Settings.from_env({"USERBOARD_HEARTBEAT_SECONDS": "0.25"}).heartbeat_seconds == 0.25


@pytest.mark.parametrize("name, value", [
    ("USERBOARD_HEARTBEAT_SECONDS", "0"),
    ("USERBOARD_HEARTBEAT_SECONDS", "often"),
    ("USERBOARD_HEARTBEAT_SECONDS", "nan"),
    ("USERBOARD_HEARTBEAT_SECONDS", "3600"),
    ("USERBOARD_CHANGE_LOG_SIZE", "0"),
    ("USERBOARD_CHANGE_LOG_MIN_AGE", "-1"),
    ("USERBOARD_CHANGE_LOG_MIN_AGE", "a minute"),
    ("USERBOARD_CHANGE_LOG_MIN_AGE", "nan"),
    ("USERBOARD_SOCKET_MAX_QUEUED", "0"),
    ("USERBOARD_SOCKET_MAX_QUEUED", "lots"),
    ("USERBOARD_SECURE_COOKIES", "maybe"),
    ("USERBOARD_ALLOWED_ORIGINS", "*"),
])
def test_a_bad_value_names_its_setting(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
