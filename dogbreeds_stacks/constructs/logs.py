"""CloudWatch Logs values from the settings."""

from __future__ import annotations

from aws_cdk import aws_logs as logs

from dogbreeds_stacks.settings import RETENTION_NAMES, Settings


def log_retention(settings: Settings) -> logs.RetentionDays:
    """The retention of every log group the app creates (the setting log_retention_days)."""
    return logs.RetentionDays[RETENTION_NAMES[settings.log_retention_days]]
