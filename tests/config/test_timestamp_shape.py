"""Every timestamp Layers writes for a partner (API answers, event data, webhook bodies) has one shape:
RFC 3339 in UTC with exactly three fraction digits, `2026-04-20T17:00:00.000Z`. It used to be `…:00Z` at a
whole second and `…:00.500000Z` otherwise, in the same field: Swift's ISO8601DateFormatter reads only one of
the two, whichever way its fractional-seconds option is set, and Java's `ss.SSSX` reads neither six digits."""

import json
import re
from datetime import UTC, datetime, timedelta
from datetime import timezone as timezone_offset

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.serializers import social_account_data
from accounts.services import event_record
from accounts.webhooks.services import event_body
from billing.models import Wallet
from config.api.fields import TimestampField, datetime_output
from tests.billing.factories import lease_assign
from tests.factories import make_account

SHAPE = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z\Z")
LOOKS_LIKE_A_TIME = re.compile(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:")


def timestamps(value, path="") -> dict[str, str]:
    """Every string in a JSON answer that reads as a time, by where it is."""
    found = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found |= timestamps(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found |= timestamps(item, f"{path}.{index}")
    elif isinstance(value, str) and LOOKS_LIKE_A_TIME.match(value):
        found[path] = value
    return found


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (datetime(2026, 11, 28, 17, 0, tzinfo=UTC), "2026-11-28T17:00:00.000Z"),
        (datetime(2026, 11, 28, 17, 0, 5, 500000, tzinfo=UTC), "2026-11-28T17:00:05.500Z"),
        (datetime(2026, 11, 28, 17, 0, 5, 123456, tzinfo=UTC), "2026-11-28T17:00:05.123Z"),
        # cut, never rounded: a time is never written later than it was (nor in the next second, day, year)
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "2026-12-31T23:59:59.999Z"),
        (
            datetime(2026, 11, 28, 23, 30, 0, 1, tzinfo=timezone_offset(timedelta(hours=5, minutes=30))),
            "2026-11-28T18:00:00.000Z",
        ),  # noqa: E501
        (datetime(2026, 11, 28, 17, 0, 5, 10), "2026-11-28T17:00:05.000Z"),  # naive: the API's timezone, UTC
        (None, None),
    ],
)
def test_one_timestamp_shape_whatever_the_time(value, written):
    assert datetime_output(value) == written
    if value is not None:
        assert TimestampField().to_representation(value) == written


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sent", "written"),
    [("17:00:00Z", "17:00:00.000Z"), ("17:00:00.5Z", "17:00:00.500Z"), ("19:00:00.123456+02:00", "17:00:00.123Z")],
)
def test_scheduled_for_comes_back_in_the_one_shape_however_it_was_sent(owner, sent, written):
    sa = make_account(owner)
    c = owner.client
    cnt = c.post(
        f"/v1/projects/{owner.project.id}/content",
        {"mediaType": "video", "mediaUrls": ["https://x.test/a.mp4"]},
        format="json",
    ).json()
    day = (timezone.now() + timedelta(days=2)).date().isoformat()
    body = {"targets": [{"socialAccountId": sa.id, "mode": "publish"}], "scheduledFor": f"{day}T{sent}"}
    r = c.post(f"/v1/content/{cnt['id']}/schedule", body, format="json")
    assert r.status_code == 201, r.content
    post = r.json()["scheduledPosts"][0]
    assert post["scheduledFor"] == f"{day}T{written}"
    assert SHAPE.match(cnt["createdAt"]), cnt
    listed = c.get(f"/v1/projects/{owner.project.id}/scheduled-posts").json()["data"][0]
    assert listed["scheduledFor"] == f"{day}T{written}"
    assert c.get(f"/v1/scheduled-posts/{post['id']}").json()["scheduledFor"] == f"{day}T{written}"


@pytest.mark.django_db
def test_every_timestamp_of_every_answer_has_the_one_shape(owner):
    c, p = owner.client, owner.project.id
    sa = make_account(owner)
    lease = lease_assign(owner)
    Wallet.objects.filter(organization=owner.org).update(past_due_since=timezone.now())
    hook = c.post("/v1/webhook-endpoints", {"url": "https://example.com/h", "events": ["scheduled_post.published"]})
    with transaction.atomic():
        event = event_record(
            organization_id=owner.org.pk, type="social_account.connected", data=social_account_data(sa)
        )
    answers = {
        "projects": c.get("/v1/projects"),
        "project": c.get(f"/v1/projects/{p}"),
        "accounts": c.get(f"/v1/projects/{p}/social-accounts"),
        "account": c.get(f"/v1/social-accounts/{sa.id}"),
        "events": c.get("/v1/events"),
        "webhook endpoints": c.get("/v1/webhook-endpoints"),
        "wallet": c.get("/v1/wallet"),
        "wallet entries": c.get("/v1/wallet/entries"),
        "leased accounts": c.get(f"/v1/projects/{p}/leased-accounts"),
        "lease requests": c.get(f"/v1/projects/{p}/leased-accounts/requests"),
        "oauth-url": c.post(
            f"/v1/projects/{p}/social/oauth-url",
            {"platform": "tiktok", "returnUrl": "https://app.acme.test/cb"},
            format="json",
        ),
        "release": c.delete(f"/v1/leased-accounts/{lease.social_account_id}"),
    }
    found = {}
    for name, response in answers.items():
        assert response.status_code in (200, 201), (name, response.content)
        found |= timestamps(response.json(), name)
    found |= timestamps(json.loads(event_body(event)), "webhook body")
    found |= timestamps(hook.json(), "webhook endpoint")
    wrong = {where: value for where, value in found.items() if not SHAPE.match(value)}
    assert not wrong, wrong
    # every kind of timestamp was looked at, not only a few
    names = {where.rsplit(".", 1)[-1] for where in found}
    for name in (
        "createdAt",
        "connectedAt",
        "expiresAt",
        "assignedAt",
        "currentPeriodStart",
        "currentPeriodEnd",
        "periodStart",
        "pastDueSince",
        "releasedAt",
        "paidThrough",
        "submittedAt",
    ):
        assert name in names, (name, sorted(names))


def test_every_declared_output_timestamp_is_written_in_the_one_shape():
    """Output serializers declare TimestampField, so a field added later cannot bring DRF's shape back."""
    from rest_framework import serializers

    import config.urls  # noqa: F401 - imports every app's API, and so every serializer
    from config.api.fields import AwareDateTimeField

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    plain, checked = [], 0
    for cls in set(subclasses(serializers.Serializer)):
        if cls.__module__.split(".")[0] not in ("accounts", "billing", "leasing", "scheduling", "config"):
            continue
        for name, field in cls._declared_fields.items():
            child = getattr(field, "child", field)
            ours = isinstance(child, TimestampField | AwareDateTimeField)
            if isinstance(child, serializers.DateTimeField) and not ours:
                plain.append(f"{cls.__module__}.{cls.__name__}.{name}")
            checked += isinstance(child, serializers.DateTimeField)
    assert not plain, plain
    assert checked > 20, checked  # the walk found the API's serializers
