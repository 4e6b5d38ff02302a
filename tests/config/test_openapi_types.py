"""Types of the OpenAPI document that generated clients rely on: one enum per set of values, the enum
where a field takes one, and int64 for every amount of cents."""

import pytest
from django.test import Client

from accounts.services import EVENT_TYPES


@pytest.fixture
def components(db):
    return Client().get("/v1/openapi.json").json()["components"]["schemas"]


def test_an_accounts_status_is_one_enum_wherever_it_is_shown(components):
    # SocialAccountStatusEnum and LeasedAccountOutputStatusEnum had the same values: a generated client got
    # two types for one status and could not compare a leased account's with a listed account's.
    statuses = [
        name
        for name, schema in components.items()
        if schema.get("enum") == ["connected", "reauth_required", "disconnected"]
    ]
    assert statuses == ["SocialAccountStatusEnum"], statuses
    leased = components["LeasedAccountOutput"]["properties"]["status"]
    assert leased == {"$ref": "#/components/schemas/SocialAccountStatusEnum"}, leased


def test_an_events_type_is_the_event_types_enum(components):
    # EventOutput.type was a plain string, though webhook subscriptions take EventsEnum.
    assert sorted(components["EventsEnum"]["enum"]) == sorted(EVENT_TYPES)
    assert components["EventOutput"]["properties"]["type"] == {"$ref": "#/components/schemas/EventsEnum"}


def test_every_amount_of_cents_is_int64(components):
    # monthlyPriceCents was int32 where balanceCents and amountCents are int64.
    cents = {
        f"{name}.{prop}": schema.get("format")
        for name, component in components.items()
        for prop, schema in component.get("properties", {}).items()
        if prop.endswith("Cents")
    }
    assert "LeasedAccountOutput.monthlyPriceCents" in cents
    assert set(cents.values()) == {"int64"}, cents
