"""When eviction happens: the one list of settings, shared by the keep-sets (SQL) and the live cache."""

from __future__ import annotations

from transform.policies import PolicyError

# question_aware: evict after the whole prompt; question_agnostic: evict at the end of the context,
# then feed the question.
SETTINGS = ("question_aware", "question_agnostic")


class SettingError(PolicyError):
    """Unknown setting, or a prompt that cannot be split for it."""


def check_setting(setting: str) -> str:
    if setting not in SETTINGS:
        raise SettingError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}")
    return setting
