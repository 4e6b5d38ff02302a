"""System check: the stored secrets decrypt with LAYERS_TOKEN_KEYS.

A valid Fernet key that is not the one the secrets were encrypted with passes every start-up refusal of the
settings, and then each stored secret decrypts to nothing (accounts.crypto.decrypt reads a failure as a lost
token): every account goes reauth_required with a webhook each, webhook signatures and staff TOTP stop
working, and staff are locked out of the admin that would show it. This check reads the newest few values
of each encrypted column and of the staff MFA secrets, and refuses when none of them decrypts.

Some values that do not decrypt among values that do are a warning, not a refusal: a key removed before
`rotate_token_keys` had run loses what it encrypted for good (README, "Rotating the token-encryption keys"),
and the service must start for those accounts to be reauthorized.

It reads the database, so it is tagged `database` and runs, as Django's convention for such checks has it,
with `manage.py check --database default`, with `migrate`, and before a web, worker or beat process starts
(config/startup.py); not with every other management command (`rotate_token_keys --dry-run`, the remedy it
names, must run while the keys are wrong). Before the first `migrate` there is nothing to read, and nothing
is refused."""

from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, ProgrammingError, connections, transaction

from accounts import crypto

SAMPLE = 5  # newest values read per column: every column's, since a wrong key reads none of them
ALIAS = "default"  # every model lives there


@register(Tags.database)
def stored_secrets_decrypt(app_configs=None, databases=None, **kwargs):
    if not databases or ALIAS not in databases:
        return []
    try:
        values = _newest_secrets()
    except DatabaseError as exc:  # unreachable: readyz says so; the next start checks again
        return [
            Warning(
                f"Could not read the stored secrets to check LAYERS_TOKEN_KEYS against them ({type(exc).__name__}).",
                id="layers.W002",
            )
        ]
    unreadable = sum(1 for value in values if crypto.decrypt(value) is None)
    if values and unreadable == len(values):
        return [
            Error(
                f"None of the {len(values)} newest stored secrets decrypts with LAYERS_TOKEN_KEYS: every platform "
                "token would read as lost (each account reauth_required, with a webhook), webhook signing would "
                "fail and staff TOTP codes would not verify.",
                hint=(
                    "LAYERS_TOKEN_KEYS lacks the key they were encrypted with: a wrong key, or the previous key "
                    "removed before rotating (without LAYERS_TOKEN_KEYS, a changed DJANGO_SECRET_KEY, from which "
                    "the key is then derived). Set the keys in use again, a new key first (<new>,<old>); "
                    "`python manage.py rotate_token_keys --dry-run` must then report 0 undecryptable. If every "
                    "key is lost for good, DJANGO_SILENCED_SYSTEM_CHECKS=layers.E001 starts the service anyway, "
                    "and every account will need a reauth."
                ),
                id="layers.E001",
            )
        ]
    if unreadable:
        return [
            Warning(
                f"{unreadable} of the {len(values)} newest stored secrets do not decrypt with LAYERS_TOKEN_KEYS.",
                hint=(
                    "They were encrypted with a key no longer listed and are lost (those accounts need a "
                    "reauth); `python manage.py rotate_token_keys --dry-run` counts them all."
                ),
                id="layers.W001",
            )
        ]
    return []


def _newest_secrets() -> list[str]:
    """The newest SAMPLE values of each encrypted column, and the encrypted secrets of the newest SAMPLE staff
    MFA authenticators, from the tables that exist (none before the first migrate)."""
    from django.apps import apps

    from accounts.key_rotation import MFA_KEYS, encrypted_columns

    tables = set(connections[ALIAS].introspection.table_names())
    values: list[str] = []
    for model, field in encrypted_columns():
        if model._meta.db_table in tables:
            newest = model._base_manager.exclude(**{field: ""}).exclude(**{f"{field}__isnull": True})
            values += _read(newest.values_list(field, flat=True))
    if apps.is_installed("allauth.mfa"):
        from allauth.mfa.models import Authenticator

        if Authenticator._meta.db_table in tables:
            for data in _read(Authenticator.objects.values_list("data", flat=True)):
                values += [
                    data[key]
                    for key in MFA_KEYS
                    if isinstance(data, dict) and isinstance(data.get(key), str) and crypto.looks_encrypted(data[key])
                ]
    return values


def _read(queryset) -> list:
    """The newest SAMPLE rows; none when the query fails on a schema older than the code (a column that a
    migration not yet applied adds), the savepoint keeping any surrounding transaction usable."""
    try:
        with transaction.atomic(using=ALIAS):
            return list(queryset.using(ALIAS).order_by("-pk")[:SAMPLE])
    except ProgrammingError:  # an undefined column; a database that does not answer is the caller's W002
        return []
