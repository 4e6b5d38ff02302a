"""Test suite: real PostgreSQL (concurrency tests need it), sandbox platforms, in-memory broker."""

from .base import *  # noqa: F403
from .base import DATABASES, PLATFORM_TRANSPORTS, database, env, one_of

DATABASES["default"] = database(
    env.str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/layers"), conn_max_age=0
)
# LAYERS_TEST_DB lets several checkouts on one machine run the suite at once without sharing a database.
DATABASES["default"]["TEST"] = {"NAME": env.str("LAYERS_TEST_DB", default="test_layers")}
# `make test` puts the test database's tables and indexes in a tablespace in RAM when it can make one
# (.ci/test-tablespace says why: Django's flush after each transactional test took 1.4 s on disk, 0.2 s there).
_TABLESPACE = env.str("LAYERS_TEST_TABLESPACE", default="")
if _TABLESPACE:
    _OPTIONS = DATABASES["default"]["OPTIONS"]
    _OPTIONS["options"] = f"{_OPTIONS.get('options', '')} -c default_tablespace={_TABLESPACE}".strip()
CELERY_BROKER_URL = "memory://"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = False
LAYERS_API_RATE = "100000/min"
LAYERS_CALLBACK_RATE = "100000/min"  # the tests that prove the limits lower them
LAYERS_SANDBOX_RATE = "100000/min"
LAYERS_AUTH_FAILURE_RATE = "100000/min"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}  # noqa: F405
MEDIA_ROOT = str(VAR_DIR / "test-media")  # noqa: F405
LAYERS_PLATFORM_TRANSPORT = one_of("LAYERS_PLATFORM_TRANSPORT", default="wsgi", choices=PLATFORM_TRANSPORTS)
LAYERS_SANDBOX_PUBLISH_DELAY_SECONDS = 0  # sandbox posts are ready at once; tests move the clock for more
LAYERS_SANDBOX_TIKTOK_MODERATION_SECONDS = 0  # and have their TikTok post id at once, unless a test delays it
# The suite models time passing by moving Python's clock with time_machine (a tick an hour later makes retries
# due), which the clock-skew guard (config/clock.py) would read as this process's clock being off from the
# database's: off here; tests/scheduling/test_clock_skew.py turns it on and makes the skew with time_machine.
LAYERS_MAX_CLOCK_SKEW_SECONDS = 0
