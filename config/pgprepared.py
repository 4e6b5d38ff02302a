"""What server-side binding (LAYERS_DB_PREPARED_STATEMENTS, config/settings/base.py) needs to stay correct:
integers out of their column's range are refused, not wrapped, and prepared statements that a migration
made stale are dropped instead of failing until the connection is recycled.

Integers: with server-side binding Django sends an IntegerField's value as psycopg's Int4 (Int2, Int8 for
the other integer fields), and psycopg's C binary dumper for Int4 keeps the low 32 bits: 2**32 + 4900 was
stored as 4900, silently (a price, an amount). Sent as text instead, the value is checked by PostgreSQL,
which refuses it ("out of range for type integer", a DataError), as it does with client-side binding.

Connections prepare the statements they run often (LAYERS_DB_PREPARED_STATEMENTS, config/settings/base.py).
When a migration changes the type of a column such a statement reads, PostgreSQL refuses the statement on
connections that prepared it before ("cached plan must not change result type"), and psycopg keeps sending
it. Inside a transaction the rollback that follows the error makes psycopg forget its prepared statements.
Outside one nothing would, so the connection is closed: the next query opens a fresh one, which prepares
against the new schema. The request that hit the error still fails; the ones after it do not."""

from django.db.backends.signals import connection_created

STALE_PLAN_SQLSTATE = "0A000"  # feature_not_supported, which is what PostgreSQL raises for a stale plan
STALE_PLAN_SOURCE = "RevalidateCachedQuery"  # the server function that raises it (never translated)


def is_stale_plan(error: BaseException) -> bool:
    if getattr(error, "sqlstate", None) != STALE_PLAN_SQLSTATE:
        return False
    diag = getattr(error, "diag", None)
    return getattr(diag, "source_function", None) == STALE_PLAN_SOURCE or "cached plan" in str(error)


def forget_stale_plans(execute, sql, params, many, context):
    try:
        return execute(sql, params, many, context)
    except Exception as exc:
        if is_stale_plan(exc.__cause__ or exc):  # Django wraps psycopg's error; the SQLSTATE is on the cause
            connection = context["connection"]
            if not connection.in_atomic_block:
                connection.close()
        raise


def _text_integer_dumpers(adapters) -> None:
    """Register psycopg's text dumpers for Int2/Int4/Int8 (they also become the ones `%s` picks)."""
    from psycopg import _cmodule
    from psycopg.types import numeric

    module = _cmodule._psycopg or numeric  # the C dumpers when psycopg has them, else the Python ones
    for wrapper, dumper in (("Int2", "Int2Dumper"), ("Int4", "Int4Dumper"), ("Int8", "Int8Dumper")):
        adapters.register_dumper(getattr(numeric, wrapper), getattr(module, dumper))


def _install_on(sender, connection, **kwargs) -> None:
    if connection.vendor != "postgresql":
        return
    if connection.settings_dict["OPTIONS"].get("server_side_binding"):
        _text_integer_dumpers(connection.connection.adapters)
    if forget_stale_plans not in connection.execute_wrappers:
        # First, not last: `connection.execute_wrapper()` blocks pop the last wrapper when they end, and a
        # connection may be opened inside one.
        connection.execute_wrappers.insert(0, forget_stale_plans)


def install() -> None:
    connection_created.connect(_install_on, dispatch_uid="layers-pg-forget-stale-plans")
