"""A LAYERS_TOKEN_KEYS that is a valid Fernet key, but not the one the stored secrets were encrypted with, used
to be accepted: every token then read as lost (every account reauth_required, a webhook each) and staff TOTP
stopped verifying. A system check reads a few of the newest stored secrets and refuses when none decrypts;
the web, worker and beat processes run it before they serve or consume anything, as does `migrate`."""

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from accounts.models import SocialAccount
from tests.config.test_production_settings import FULL
from tests.factories import make_account
from tests.reliability.processes import database_url
from tests.staff import staff_member, totp_code, with_mfa

OLD, NEW, WRONG = (Fernet.generate_key().decode() for _ in range(3))


def check() -> None:
    """`manage.py check --database default`, which also runs the checks that read the database."""
    call_command("check", databases=["default"])


def test_a_wrong_key_is_refused_naming_the_remedy(owner, settings):
    settings.LAYERS_TOKEN_KEYS = [OLD]
    make_account(owner)
    settings.LAYERS_TOKEN_KEYS = [WRONG]
    with pytest.raises(SystemCheckError) as refused:
        check()
    message = str(refused.value)
    assert "layers.E001" in message and "LAYERS_TOKEN_KEYS" in message
    assert "rotate_token_keys --dry-run" in message


def test_the_remedy_named_exists_and_counts_what_is_unreadable(owner, settings):
    settings.LAYERS_TOKEN_KEYS = [OLD]
    make_account(owner)
    settings.LAYERS_TOKEN_KEYS = [WRONG]
    from io import StringIO

    out = StringIO()
    call_command("rotate_token_keys", "--dry-run", stdout=out)  # not itself blocked by the check
    assert "1 undecryptable" in out.getvalue()


def test_a_staff_totp_secret_under_another_key_is_refused_too(db, settings):
    # Staff locked out of the admin (TOTP no longer verifying) is the same mistake.
    settings.LAYERS_TOKEN_KEYS = [OLD]
    user = with_mfa(staff_member("ops"))
    assert totp_code(user)
    settings.LAYERS_TOKEN_KEYS = [WRONG]
    with pytest.raises(SystemCheckError, match="layers.E001"):
        check()


@pytest.mark.parametrize("keys", [[OLD], [NEW, OLD]], ids=["the-key", "a-new-key-prepended"])
def test_the_keys_that_encrypted_the_secrets_pass(owner, settings, keys):
    settings.LAYERS_TOKEN_KEYS = [OLD]
    make_account(owner)
    settings.LAYERS_TOKEN_KEYS = keys
    check()


def test_an_empty_database_passes(db, settings):
    settings.LAYERS_TOKEN_KEYS = [WRONG]
    check()


def test_a_column_that_a_pending_migration_adds_is_skipped(owner, settings):
    # `migrate` runs the check before migrating: the code may name an encrypted column not there yet.
    settings.LAYERS_TOKEN_KEYS = [OLD]
    account = make_account(owner)
    with connection.cursor() as cursor:  # undone with the test's transaction
        cursor.execute("ALTER TABLE accounts_socialaccount RENAME COLUMN refresh_token_enc TO refresh_token_later")
    check()
    settings.LAYERS_TOKEN_KEYS = [WRONG]
    with pytest.raises(SystemCheckError, match="layers.E001"):  # the other columns are still read
        check()
    assert SocialAccount.objects.filter(pk=account.pk).values_list("pk", flat=True).get() == account.pk


def test_some_lost_secrets_among_readable_ones_are_a_warning_not_a_refusal(owner, settings, capsys):
    # A key removed before rotating (README) loses what it encrypted, for good: those accounts need a
    # reauth, and the service must still start for them to get one.
    settings.LAYERS_TOKEN_KEYS = [OLD]
    make_account(owner)
    settings.LAYERS_TOKEN_KEYS = [NEW]
    make_account(owner)
    check()
    assert "layers.W001" in capsys.readouterr().err


@pytest.fixture
def secrets_under_old_key(transactional_db, owner, settings):
    """A committed account whose token is encrypted with OLD, for processes of their own to read."""
    settings.LAYERS_TOKEN_KEYS = [OLD]
    make_account(owner)


def start(argv: list[str], keys: str) -> subprocess.CompletedProcess:
    """A production process on the test database, with LAYERS_TOKEN_KEYS=keys."""
    env = {
        **FULL,
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "DATABASE_URL": database_url("layers-start-check"),
        "LAYERS_TOKEN_KEYS": keys,
        # unreachable: the refusal must come before any connection to them
        "CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
        "LAYERS_CACHE_URL": "redis://127.0.0.1:9/1",
    }
    try:
        return subprocess.run(  # noqa: S603 - our own interpreter and its celery, fixed programs
            argv, cwd=django_settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as running:  # a worker or beat that started, waiting for its broker
        return subprocess.CompletedProcess(argv, None, stdout=str(running.stdout), stderr=str(running.stderr))


CELERY = [os.path.join(os.path.dirname(sys.executable), "celery"), "-A", "config"]
STARTS = {
    "web": [sys.executable, "-c", "import config.wsgi; print('serving')"],
    "worker": [*CELERY, "worker", "--pool", "solo", "-l", "warning"],
    "beat": [*CELERY, "beat", "-l", "warning", "--schedule", "/dev/null"],
    "migrate": [sys.executable, "manage.py", "migrate", "--check"],
}


@pytest.mark.parametrize("process", list(STARTS))
def test_production_processes_refuse_to_start_with_a_wrong_key(secrets_under_old_key, process):
    result = start(STARTS[process], keys=WRONG)
    assert result.returncode not in (0, None), f"started: {result.stderr[-800:]}"
    assert "layers.E001" in result.stderr and "rotate_token_keys --dry-run" in result.stderr, result.stderr[-2000:]


def test_the_web_process_starts_with_the_right_key(secrets_under_old_key):
    result = start(STARTS["web"], keys=f"{NEW},{OLD}")
    assert result.returncode == 0 and result.stdout.strip() == "serving", result.stderr[-2000:]
