"""Re-encrypt every secret stored with accounts.crypto under the first key of LAYERS_TOKEN_KEYS, so that the
other keys can be removed (`manage.py rotate_token_keys`; the procedure is in the README).

What is covered, found rather than listed so that a new encrypted column cannot be forgotten:
- every model field whose name ends in `_enc` (platform tokens of connected and pool accounts, webhook
  secrets current and previous, managed-provider secrets, ...);
- webhook secrets inside stored Idempotency-Key responses (kept encrypted for 24 h so that a replay can
  show the secret again);
- staff MFA secrets (allauth Authenticator data: TOTP secret, recovery-code seed), which the MFA adapter
  encrypts; one stored in clear by an older version is encrypted now.

Safe to run at any time and again: a value already under the first key is left alone, and a value changed
by someone else meanwhile (a token refresh) is not overwritten (conditional update, or row lock).
The columns are walked one after another, so a secret that moves to another row during the run may land in
a column already passed: the code that moves one (a lease's assignment and release hand a token between a
pool account and its leased account) writes it re-encrypted under the first key (crypto.reencrypt), never
as a copy of the stored form, so nothing under an old key is left behind the run."""

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from cryptography.fernet import InvalidToken
from django.apps import apps
from django.db import transaction

from accounts import crypto

SECRET_PREFIX = "enc:"  # accounts.webhooks.apis.SecretRevealingApiView._ENC
MFA_KEYS = ("secret", "seed")


@dataclass
class Column:
    rotated: int = 0  # re-encrypted under the first key now (or encrypted, when found in clear)
    current: int = 0  # already under the first key
    undecryptable: int = 0  # no configured key decrypts it: lost already (the key was removed too early)
    changed_meanwhile: int = 0  # rewritten by someone else during the run (necessarily under the first key)


@dataclass
class Outcome:
    value: str | None  # the new stored value, None when unchanged
    kind: str  # a Column field name


def _rotate_value(value: str, *, allow_clear: bool = False) -> Outcome:
    if allow_clear and not crypto.looks_encrypted(value):
        return Outcome(crypto.encrypt(value), "rotated")
    if crypto.is_current(value):
        return Outcome(None, "current")
    try:
        return Outcome(crypto.rotate(value), "rotated")
    except InvalidToken:
        return Outcome(None, "undecryptable")


def encrypted_columns() -> Iterator[tuple[type, str]]:
    """(model, field name) of every column holding a value encrypted with accounts.crypto (also read by
    accounts.checks)."""
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for field in model._meta.concrete_fields:
            if field.name.endswith("_enc"):
                yield model, field.name


def _pages(queryset, batch: int) -> Iterator[list]:
    """(pk, value) rows in primary-key order, one page at a time (keyset: no OFFSET, no long transaction)."""
    last = None
    while True:
        page = queryset if last is None else queryset.filter(pk__gt=last)
        rows = list(page.order_by("pk")[:batch])
        if not rows:
            return
        yield rows
        last = rows[-1][0]


def _rotate_column(model, field: str, *, batch: int, dry_run: bool) -> Column:
    out = Column()
    manager = model._default_manager
    values = manager.exclude(**{field: ""}).exclude(**{f"{field}__isnull": True}).values_list("pk", field)
    for rows in _pages(values, batch):
        for pk, value in rows:
            outcome = _rotate_value(value)
            # Written only if nobody rewrote it since we read it: a refreshed token must not be put back.
            if (
                outcome.value is not None
                and not dry_run
                and not manager.filter(pk=pk, **{field: value}).update(**{field: outcome.value})
            ):
                outcome.kind = "changed_meanwhile"
            setattr(out, outcome.kind, getattr(out, outcome.kind) + 1)
    return out


def _rotate_json(model, field: str, rotate_data, *, batch: int, dry_run: bool, **filters) -> Column:
    """Rows whose JSON `field` holds encrypted values: `rotate_data(data) -> (new data | None, outcomes)`,
    applied under a row lock."""
    out = Column()
    manager = model._default_manager
    ids = manager.filter(**filters).values_list("pk", "pk")
    for rows in _pages(ids, batch):
        for pk, _ in rows:
            with transaction.atomic():
                row = manager.select_for_update().filter(pk=pk).first()
                if row is None:
                    continue
                data, outcomes = rotate_data(getattr(row, field))
                if data is not None and not dry_run:
                    setattr(row, field, data)
                    row.save(update_fields=[field])
            for kind in outcomes:
                setattr(out, kind, getattr(out, kind) + 1)
    return out


def _rotate_idempotent_response(body):
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return None, []
    outcome = _rotate_value(secret[len(SECRET_PREFIX) :])
    new = {**body, "secret": SECRET_PREFIX + outcome.value} if outcome.value is not None else None
    return new, [outcome.kind]


def _rotate_mfa_data(data):
    if not isinstance(data, dict):
        return None, []
    new, kinds = dict(data), []
    for key in MFA_KEYS:
        if isinstance(data.get(key), str) and data[key]:
            outcome = _rotate_value(data[key], allow_clear=True)
            kinds.append(outcome.kind)
            if outcome.value is not None:
                new[key] = outcome.value
    codes = data.get("migrated_codes")
    if isinstance(codes, list):
        rotated = []
        for code in codes:
            outcome = _rotate_value(code, allow_clear=True)
            kinds.append(outcome.kind)
            rotated.append(outcome.value if outcome.value is not None else code)
        new["migrated_codes"] = rotated
    return (new if new != data else None), kinds


def rotate_all(*, batch: int = 500, dry_run: bool = False) -> dict:
    """Rotate everything; returns {"columns": {name: counts}, and the totals}. `dry_run` counts only."""
    columns: dict[str, Column] = {}
    for model, field in encrypted_columns():
        columns[f"{model._meta.label}.{field}"] = _rotate_column(model, field, batch=batch, dry_run=dry_run)
    from accounts.models import IdempotencyKey

    columns["accounts.IdempotencyKey.response_body.secret"] = _rotate_json(
        IdempotencyKey,
        "response_body",
        _rotate_idempotent_response,
        batch=batch,
        dry_run=dry_run,
        response_body__has_key="secret",
    )
    if apps.is_installed("allauth.mfa"):
        from allauth.mfa.models import Authenticator

        columns["mfa.Authenticator.data"] = _rotate_json(
            Authenticator, "data", _rotate_mfa_data, batch=batch, dry_run=dry_run
        )
    report = {name: _camel(asdict(counts)) for name, counts in sorted(columns.items())}
    totals = {kind: sum(c[kind] for c in report.values()) for kind in _camel(asdict(Column()))}
    return {"keys": crypto.key_count(), "dryRun": dry_run, "columns": report, **totals}


def _camel(counts: dict) -> dict:
    return {"changedMeanwhile" if k == "changed_meanwhile" else k: v for k, v in counts.items()}
