"""PostgreSQL plans the API's hot statements once per connection, not on every request
(LAYERS_DB_PREPARED_STATEMENTS, config/settings/base.py), what a partner reads does not change when a
statement starts being served prepared, and a migration that changes a column's type costs one failed
query per connection (config/pgprepared.py)."""

import psycopg
import pytest
from django.db import NotSupportedError, connection, transaction

from config.settings.base import database
from tests.factories import make_account

pytestmark = pytest.mark.django_db


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_a_dashboard_polling_its_accounts_is_answered_from_prepared_statements(owner):
    # given a project with three accounts
    for platform in ("tiktok", "instagram", "tiktok"):
        make_account(owner, platform=platform)
    url = f"/v1/projects/{owner.project.pk}/social-accounts"

    # when a partner's dashboard lists them again and again on one connection
    pages = [owner.client.get(url) for _ in range(7)]

    # then every answer is the same page of three accounts, before and after the statements were prepared
    assert all(page.status_code == 200 for page in pages)
    assert [a["id"] for a in pages[0].json()["data"]] and len(pages[0].json()["data"]) == 3
    assert all(page.json() == pages[0].json() for page in pages)
    # and the API key's lookup and the page's two statements are prepared on the connection: planned once
    prepared = " ".join(_prepared())
    assert "FROM accounts_apikey" in prepared
    assert "FROM accounts_socialaccount sa" in prepared
    assert "FROM scheduling_layer" in prepared


def test_the_database_urls_own_options_are_kept_next_to_prepared_statements():
    options = database("postgres://layers@db.internal:5432/layers?application_name=layers-web")["OPTIONS"]
    assert options == {
        "connect_timeout": 10,
        "server_side_binding": True,
        "prepare_threshold": 5,
        "application_name": "layers-web",
    }
    assert database("postgres://layers@db.internal/layers?connect_timeout=3")["OPTIONS"]["connect_timeout"] == 3


@pytest.mark.django_db(transaction=True)
def test_a_migration_that_changes_a_column_type_costs_one_failed_query_not_a_connections_lifetime():
    settings = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE prepared_probe (id integer, name varchar(10))")
        cursor.execute("INSERT INTO prepared_probe VALUES (1, 'before')")

    def migrate(sql: str) -> None:  # another process's connection, as `manage.py migrate` would be
        with psycopg.connect(
            host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"], dbname=settings["NAME"]
        ) as other:
            other.execute(sql)

    def read():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, name FROM prepared_probe WHERE id = %s", [1])
            return cursor.fetchall()

    try:
        # given a statement the connection has run often enough to prepare it
        for _ in range(6):
            assert read() == [(1, "before")]
        assert any("prepared_probe" in statement for statement in _prepared())

        # when a migration on another connection changes the type of a column it reads
        migrate("ALTER TABLE prepared_probe ALTER COLUMN name TYPE varchar(40)")
        migrate("UPDATE prepared_probe SET name = 'after, and longer than before'")

        # then the first read on the old plan fails, and the next one reads the new schema
        with pytest.raises(NotSupportedError, match="cached plan must not change result type"):
            read()
        assert read() == [(1, "after, and longer than before")]

        # and inside a transaction too: the rollback that follows the failure is what heals it
        for _ in range(6):
            read()
        migrate("ALTER TABLE prepared_probe ALTER COLUMN name TYPE varchar(80)")
        with pytest.raises(NotSupportedError), transaction.atomic():
            read()
        with transaction.atomic():
            assert read() == [(1, "after, and longer than before")]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS prepared_probe")


def _pool_account(price: int):
    from leasing.models import PoolAccount

    return PoolAccount.objects.create(
        handle=f"fit.{price % 10_000}",
        platform_user_id=f"pool-{price}",
        vertical="fitness",
        languages=["en-US"],
        geos=["US"],
        monthly_price_cents=price,
    )


@pytest.mark.parametrize("price", [2**32 + 4900, 2**31, 2**63 + 1])
def test_an_integer_out_of_its_columns_range_is_refused_not_wrapped(db, price):
    from django.db import DataError

    from leasing.models import PoolAccount

    assert connection.settings_dict["OPTIONS"].get("server_side_binding")  # what made Int4 wrap
    # Server-side binding sent the price as a binary int4 keeping its low 32 bits: 2**32 + 4900 became 4900.
    with pytest.raises(DataError, match="out of range"), transaction.atomic():
        _pool_account(price)
    assert not PoolAccount.objects.exists()


def test_integers_in_range_are_stored_exactly(db):
    from billing.models import LedgerEntry
    from leasing.models import PoolAccount
    from tests.conftest import make_tenant

    _pool_account(2**31 - 1)
    assert PoolAccount.objects.get().monthly_price_cents == 2**31 - 1  # read back from the row
    tenant = make_tenant("Big spender")
    LedgerEntry.objects.create(organization=tenant.org, kind="adjustment", amount_cents=2**40 + 7, reason="x")
    assert LedgerEntry.objects.filter(amount_cents=2**40 + 7).get().amount_cents == 2**40 + 7  # a bigint column
