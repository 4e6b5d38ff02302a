"""`manage.py top_up --org <orgId> --cents N [--json]` → {"balanceCents"}: a top-up ledger entry."""

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import LedgerEntry
from tests.billing.factories import balance, lease_assign

pytestmark = pytest.mark.django_db


def run_json(*args) -> dict:
    out = io.StringIO()
    call_command(*args, "--json", stdout=out)
    text = out.getvalue()
    assert text.count("\n") <= 1
    return json.loads(text)


def test_top_up_prints_the_new_balance(owner):
    lease_assign(owner, price_cents=4900)

    assert run_json("top_up", "--org", owner.org.pk, "--cents", "10000") == {"balanceCents": 5100}
    assert run_json("top_up", "--org", owner.org.pk, "--cents", "1") == {"balanceCents": 5101}

    entry = LedgerEntry.objects.filter(organization=owner.org, kind="top_up").first()
    assert (entry.actor, entry.reason) == (None, "Top-up")
    assert balance(owner) == 5101


def test_top_up_with_a_reference_is_recorded_once(owner):
    args = ("top_up", "--org", owner.org.pk, "--cents", "2500", "--reference", "wire-7")
    assert run_json(*args) == run_json(*args) == {"balanceCents": 2500}
    assert LedgerEntry.objects.filter(organization=owner.org).count() == 1


def test_top_up_without_json_prints_a_sentence(owner):
    out = io.StringIO()
    call_command("top_up", "--org", owner.org.pk, "--cents", "123456", stdout=out)
    assert out.getvalue().strip() == "Topped up Acme: balance $1,234.56"


def test_a_repeated_reference_says_nothing_was_added(owner):
    args = ("top_up", "--org", owner.org.pk, "--cents", "2500", "--reference", "wire-7")
    first, again = io.StringIO(), io.StringIO()
    call_command(*args, stdout=first)
    call_command(*args, stdout=again)
    assert first.getvalue().strip() == "Topped up Acme: balance $25.00"
    assert again.getvalue().strip() == "Already recorded (wire-7), nothing added to Acme: balance $25.00"


@pytest.mark.parametrize(
    "args",
    [
        ("--org", "org_00000000000000000000000000000000", "--cents", "100"),
        ("--org", "prj_nope\x00", "--cents", "100"),
        ("--org", "{org}", "--cents", "0"),
        ("--org", "{org}", "--cents", "-100"),
    ],
)
def test_top_up_refuses_an_unknown_org_or_a_non_positive_amount(owner, args):
    args = [a.format(org=owner.org.pk) for a in args]
    with pytest.raises(CommandError):
        call_command("top_up", *args, "--json", stdout=io.StringIO())
    assert not LedgerEntry.objects.exists()
