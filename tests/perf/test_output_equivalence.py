"""The output serializers of list endpoints write their rows out by hand (for speed); their declared fields
still describe the output. Both must give exactly the same representation, for every shape of row."""

from datetime import UTC, datetime, timedelta
from datetime import timezone as timezone_offset

import pytest
from django.utils import timezone
from rest_framework import serializers

from accounts import selectors as account_selectors
from accounts.models import SocialAccount
from accounts.serializers import SocialAccountOutput
from config.api.fields import TimestampField, datetime_output
from scheduling import selectors as scheduling_selectors
from scheduling import services
from scheduling.models import ScheduledPost
from scheduling.serializers import PublishedPostOutput, ScheduledPostOutput
from tests.factories import make_account

pytestmark = pytest.mark.django_db


def field_by_field(serializer_class, instance) -> dict:
    """What DRF's generic Serializer.to_representation makes of the declared fields."""
    return serializers.Serializer.to_representation(serializer_class(), instance)


def test_social_account_representation_matches_its_declared_fields(owner):
    now = timezone.now()
    plain = make_account(owner)
    services.layers_provision_for_account(account=plain)
    reauth = make_account(owner, platform="instagram", status="reauth_required")
    SocialAccount.objects.filter(pk=reauth.pk).update(
        reauth_required_at=now, avatar_url="https://cdn.layers.test/a.png"
    )
    gone = make_account(owner, status="disconnected")
    for account in SocialAccount.objects.select_related("identity").filter(pk__in=[plain.pk, reauth.pk, gone.pk]):
        expected = field_by_field(SocialAccountOutput, account)
        full = SocialAccountOutput(account).data
        # the layers come oldest first; the declared field lists them in whatever order the database returns
        assert sorted(full.pop("layers"), key=str) == sorted(expected.pop("layers"), key=str)
        assert full == expected


def test_listed_page_of_accounts_reads_the_same_as_a_full_row(owner):
    now = timezone.now()
    bare = make_account(owner)  # no layers (yet): an empty list, never null
    account = make_account(owner, platform="instagram", status="reauth_required")
    SocialAccount.objects.filter(pk=account.pk).update(reauth_required_at=now, avatar_url="https://cdn.layers.test/a")
    services.layers_provision_for_account(account=account)
    make_account(owner, status="disconnected")  # never listed
    page = account_selectors.social_account_page(organization=owner.org, project_id=owner.project.pk, limit=10)

    rows = {row.id: row for row in page}
    assert set(rows) == {account.pk, bare.pk}
    for pk, row in rows.items():
        full = SocialAccount.objects.select_related("identity").get(pk=pk)
        # one order of layers on every path: the detail endpoint and the events list them as the page does
        assert SocialAccountOutput(row).data == SocialAccountOutput(full).data
        expected = field_by_field(SocialAccountOutput, full)
        fast = SocialAccountOutput(row).data
        assert sorted(fast.pop("layers"), key=str) == sorted(expected.pop("layers"), key=str)
        assert fast == expected
    assert SocialAccountOutput(rows[bare.pk]).data["layers"] == []
    assert len(rows[account.pk].layers) == 4


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 28, 17, 0, tzinfo=UTC),
        datetime(2026, 11, 28, 17, 0, 5, 123456, tzinfo=UTC),
        datetime(2026, 11, 28, 23, 30, 0, 1, tzinfo=timezone_offset(timedelta(hours=5, minutes=30))),
        datetime(2026, 3, 29, 1, 59, 59, 999999, tzinfo=timezone_offset(timedelta(hours=-8))),
        datetime(2026, 11, 28, 17, 0, 5, 10),  # naive: read in the API's timezone, UTC
        None,
    ],
)
def test_hand_written_timestamps_read_as_the_declared_fields_write_them(value):
    assert datetime_output(value) == (None if value is None else TimestampField().to_representation(value))


def test_scheduled_post_representation_matches_its_declared_fields(owner):
    account = make_account(owner, platform="instagram")
    container = services.container_create(
        project=owner.project, media_type="image", media_urls=["https://cdn.acme.test/p.jpg"], caption="x"
    )
    when = timezone.now() + timedelta(hours=1)
    queued, published, failed = (
        services.posts_schedule(container=container, targets=[services.Target(account.pk, mode)], scheduled_for=when)[0]
        for mode in ("publish", "publish", "draft")
    )
    ScheduledPost.objects.filter(pk=published.pk).update(
        status="published",
        published_at=timezone.now(),
        external_id="1789",
        external_url="https://www.instagram.com/p/abc/",
        attempts=1,
        views=10,
        likes=2,
        metrics_synced_at=timezone.now(),
    )
    ScheduledPost.objects.filter(pk=failed.pk).update(status="failed", error_code="MEDIA_INVALID", error_message="no")
    rows = ScheduledPost.objects.select_related("social_account").filter(pk__in=[queued.pk, published.pk, failed.pk])
    for post in rows:
        assert ScheduledPostOutput(post).data == field_by_field(ScheduledPostOutput, post)
        assert PublishedPostOutput(post).data == field_by_field(PublishedPostOutput, post)
    listed = scheduling_selectors.scheduled_post_list(organization=owner.org, project_id=owner.project.pk)
    for post in listed:
        full = ScheduledPost.objects.get(pk=post.pk)
        assert ScheduledPostOutput(post).data == field_by_field(ScheduledPostOutput, full)
    for post in scheduling_selectors.published_post_list(organization=owner.org, project_id=owner.project.pk):
        full = ScheduledPost.objects.select_related("social_account").get(pk=post.pk)
        assert PublishedPostOutput(post).data == field_by_field(PublishedPostOutput, full)
