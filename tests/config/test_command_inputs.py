"""Bad input to the management commands of API.md is a CommandError saying what is wrong (a clean exit with
a message for automation), never a traceback, and never a silent success that did something else."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from accounts.models import ApiKey, Organization, Project
from billing.models import LedgerEntry
from leasing.models import LeaseRequest, PoolAccount
from tests.leasing.helpers import add_pool, request_accounts

pytestmark = pytest.mark.django_db


def run(*args) -> None:
    call_command(*args, "--json", stdout=io.StringIO(), stderr=io.StringIO())


def _counts() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (Organization, Project, ApiKey, LedgerEntry))


def refused(*args, match: str | None = None) -> str:
    with pytest.raises(CommandError, match=match) as raised:
        run(*args)
    return str(raised.value)


@pytest.mark.parametrize(
    "args",
    [
        ("create_org", "x" * 201),
        ("create_org", "Ac\x00me"),
        ("create_project", "--org", "{org}", "x" * 201),
        ("create_api_key", "--org", "{org}", "--return-domain", "a.test", "--name", "n" * 201),
        ("top_up", "--org", "{org}", "--cents", "100", "--reason", "r" * 501),
        ("top_up", "--org", "{org}", "--cents", "100", "--reference", "r" * 101),
        ("lease_assign", "lreq_\x00", "--auto"),
        ("lease_reject", "lreq_\x00", "--reason", "x"),
        ("lease_reject", "{request}", "--reason", "bad\x00reason"),
        ("lease_assign", "{request}", "--pool-account", "pool_\x00"),
    ],
)
@pytest.mark.django_db(transaction=True)  # as run from a shell: autocommit, no test transaction around it
def test_values_the_database_refuses_are_a_command_error_and_change_nothing(owner, args):
    request_id = request_accounts(owner, 1)["requestId"]
    before = _counts()
    refused(*(a.format(org=owner.org.id, request=request_id) for a in args))
    assert _counts() == before
    assert LeaseRequest.objects.get(pk=request_id).status == "requested"


def test_rotating_keys_in_batches_of_zero_is_refused_rather_than_reported_done(db):
    assert "--batch" in refused("rotate_token_keys", "--batch", "0")


def pool(*extra: str):
    return ("add_pool_accounts", "--count", "1", "--language", "en-US", "--geo", "US", *extra)


@pytest.mark.parametrize("price", [str(2**32 + 4900), str(2**31), "10000001", "-1"])
def test_a_pool_price_past_the_cap_is_refused_not_stored_as_something_else(db, price):
    assert "--price-cents" in refused(*pool("--vertical", "fitness", "--price-cents", price))
    assert not PoolAccount.objects.exists()


@pytest.mark.parametrize("vertical", ["", "   "])
def test_a_blank_vertical_is_refused(db, vertical):
    refused(*pool("--vertical", vertical, "--price-cents", "4900"), match="vertical")


def test_a_vertical_is_stored_trimmed_so_requests_match_it(owner):
    add_pool(1, vertical="fitness ")
    assert PoolAccount.objects.get().vertical == "fitness"


def test_pool_handles_are_sandbox_handles_whatever_the_vertical(db):
    (pool_id,) = add_pool(1, vertical="beauté & soins")
    handle = PoolAccount.objects.get(pk=pool_id).handle
    # The sandbox's handle rule ([a-z0-9._]{2,30}): its control endpoints accept the handle
    answer = Client().post(
        "/sandbox/tiktok/_control/invalidate-tokens", {"username": handle}, content_type="application/json"
    )
    assert answer.status_code == 200, (handle, answer.content)


def test_an_api_key_needs_at_least_one_return_domain(owner):
    refused("create_api_key", "--org", owner.org.id, match="return-domain")
    assert ApiKey.objects.filter(organization=owner.org).count() == 1  # the fixture's key only


@pytest.mark.parametrize(
    "args",
    [
        ("lease_assign", "lreq_01M8K6N4JAZWCQW2F6TRBVAWFP", "--auto"),  # unknown request
        ("lease_reject", "lreq_01M8K6N4JAZWCQW2F6TRBVAWFP", "--reason", "x"),
        ("top_up", "--org", "org_00000000000000000000000000000000", "--cents", "100"),  # unknown organization
        ("lease_assign", "lreq_\x00", "--auto"),  # refused by the database
    ],
)
def test_a_refused_json_command_still_prints_its_one_json_object(args):
    # API.md's commands with --json print exactly one JSON object: a script reading stdout used to get
    # nothing at all when the command was refused.
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command(*args, "--json", stdout=out, stderr=io.StringIO())
    assert json.loads(out.getvalue()) == {"error": {"message": str(raised.value)}}


@pytest.mark.parametrize(
    "args",
    [
        ("top_up", "--org", "org_x", "--cents", "abc"),  # not an integer
        ("top_up", "--cents", "5"),  # --org missing
        ("lease_assign", "lreq_01M8K6N4JAZWCQW2F6TRBVAWFP"),  # neither --auto nor --pool-account
    ],
)
def test_an_argument_refused_from_the_shell_is_the_same_json_error_and_exit_status(args):
    # argparse refuses these before the command runs: it printed its usage on stderr only and exited 2.
    import os
    import subprocess
    import sys

    from django.conf import settings

    done = subprocess.run(  # noqa: S603 - our own interpreter and manage.py
        [sys.executable, "manage.py", *args, "--json"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-300:]
    assert json.loads(done.stdout)["error"]["message"].startswith("Error: ")


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_blank_top_up_reason_is_refused_as_in_the_admin(owner, reason):
    # The partner reads the reason in their wallet entries; the admin's form requires one. It was stored empty.
    before = _counts()
    refused("top_up", "--org", owner.org.id, "--cents", "100", "--reason", reason, match="--reason")
    assert _counts() == before


@pytest.mark.parametrize(
    "args",
    [
        ("--once", "--batch", "0"),  # claimed nothing, forever, without a word
        ("--once", "--batch", "-1"),  # a raw DataError traceback (a negative LIMIT)
        ("--interval", "-1"),  # a ValueError from sleep() at the first idle tick
        ("--interval", "nan"),  # the same ValueError: nan is neither below 0 nor 0 or more
    ],
)
def test_dispatch_posts_refuses_a_batch_below_one_or_a_negative_interval(db, args):
    with pytest.raises(CommandError, match=args[-2]):
        call_command("dispatch_posts", *args, stdout=io.StringIO(), stderr=io.StringIO())


# --- The bench commands' numbers: refused before anything is started ------------------------------------


class Reexecuted(Exception):
    """Raised instead of re-executing the bench (which would replace this process and run it)."""


@pytest.fixture
def no_bench(monkeypatch):
    from config.bench import harness

    def reexec(command, options, **kwargs):
        raise Reexecuted(command, options)

    monkeypatch.setattr(harness, "reexec", reexec)


def bench(*args: str) -> None:
    call_command(*args, stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.parametrize(
    "command, option, value, span",
    [
        # A negative latency was handed to the sandbox as its LAYERS_SANDBOX_LATENCY_MS, whose refusal then
        # stopped the re-executed bench; 1e300 or nan got as far as the settings too, an absurd count of
        # posts or workers as far as seeding or starting them.
        ("bench_publish", "--latency-ms", "-5", "from 0 to 10000"),
        ("bench_publish", "--latency-ms", "1e300", "from 0 to 10000"),
        ("bench_publish", "--latency-ms", "nan", "from 0 to 10000"),
        ("bench_publish", "--publish-delay", "-1", "from 0 to 600"),
        ("bench_publish", "--timeout", "0", "from 1 to 7200"),
        ("bench_publish", "--timeout", "inf", "from 1 to 7200"),
        ("bench_publish", "--lead", "-3", "from 0 to 3600"),
        ("bench_publish", "--posts", "100000001", "from 1 to 100000"),
        ("bench_publish", "--accounts", "0", "from 1 to 10000"),
        ("bench_publish", "--workers", "1000", "from 1 to 32"),
        ("bench_publish", "--threads", "0", "from 1 to 256"),
        ("bench_publish", "--sandbox-workers", "-1", "from 1 to 32"),
        ("bench_publish", "--sandbox-threads", "100000", "from 1 to 256"),
        ("bench_api", "--posts", "-1", "from 1 to 100000"),
        ("bench_api", "--warmup", "-1", "from 0 to 10000"),
        ("bench_api", "--duration", "-1", "from 0.1 to 120"),
        ("bench_api", "--concurrency", "0", "from 1 to 256"),
        ("bench_api", "--gunicorn-workers", "0", "from 1 to 32"),
        ("bench_api", "--gunicorn-threads", "-8", "from 1 to 256"),
        ("bench_billing", "--batch-size", "1000000001", "from 1 to 1000000"),
        ("bench_billing", "--rounds", "0", "from 1 to 20"),
    ],
)
def test_a_bench_option_out_of_its_range_is_refused_naming_it_before_anything_starts(
    no_bench, command, option, value, span
):
    with pytest.raises(CommandError) as raised:
        bench(command, option, value)
    message = str(raised.value)
    shown = value if value.lstrip("-").isdigit() else f"{float(value):g}"  # as typed, or as a float prints
    assert message == f"{option} must be {span} (not {shown})", message


@pytest.mark.parametrize("command", ["bench_publish", "bench_api", "bench_billing"])
def test_the_bench_defaults_and_quick_sizes_are_within_the_ranges(no_bench, command):
    for extra in ((), ("--quick",)):
        with pytest.raises(Reexecuted):
            bench(command, *extra)


def test_the_edges_of_the_bench_ranges_are_accepted(no_bench):
    with pytest.raises(Reexecuted):
        bench("bench_publish", "--latency-ms", "10000", "--publish-delay", "0", "--posts", "100000", "--lead", "0")
    with pytest.raises(Reexecuted):
        bench("bench_api", "--duration", "0.1", "--warmup", "0", "--accounts", "1000")


def test_a_bench_billing_with_more_organizations_than_leases_is_refused(no_bench):
    with pytest.raises(CommandError, match=r"^--organizations must be at most --leases \(10\)$"):
        bench("bench_billing", "--leases", "10", "--organizations", "20")
