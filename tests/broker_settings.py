"""The test settings with a real broker, for subprocesses of tests of what a request does when the broker
fails: tasks are sent to CELERY_BROKER_URL (from the environment, required) instead of running inline, with
the broker settings the deployed processes use (config/settings/base.py)."""

from config.settings.test import *  # noqa: F403
from config.settings.test import env

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = False
