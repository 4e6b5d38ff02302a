"""What a managed-distribution provider answers, or fails to, must settle the post within the attempt limit:
never a post sent to the provider at every tick, never the provider's words handed to partners unchecked."""

import pytest
import time_machine

from accounts.models import Event
from tests.accounts.oauth_helpers import connected_account
from tests.receivers import receiver
from tests.scheduling.publish_helpers import later, managed_provider, post, run_dispatcher, schedule_now

pytestmark = pytest.mark.django_db(transaction=True)


def ticks_for_an_hour():
    for minutes in range(5, 65, 5):
        with time_machine.travel(later(minutes=minutes)):
            run_dispatcher()


@pytest.mark.parametrize(
    "answer, external",
    [
        ({"id": "x" * 200, "url": "https://boost.test/p/1"}, (None, "https://boost.test/p/1")),
        ({"id": "mp-1", "url": "https://boost.test/p/" + "a" * 1100}, ("mp-1", None)),
        # Python's JSON decoder raises RecursionError, not ValueError, on "[[[…" thousands deep.
        (b"[" * 5000 + b"]" * 5000, (None, None)),
    ],
    ids=["id-over-128", "url-over-1024", "nested-too-deep-to-decode"],
)
def test_a_provider_answer_that_cannot_be_kept_publishes_the_post_once_without_it(owner, answer, external):
    account = connected_account(owner, "tiktok", "managed.long")
    with receiver(lambda r: (200, answer, {})) as (url, received):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
        ticks_for_an_hour()
    body = post(owner, scheduled["id"])
    # The provider took the post (2xx): it is published, and not sent to the provider again at every tick.
    assert (body["status"], len(received)) == ("published", 1), (body["status"], body["attempts"], len(received))
    assert (body["externalId"], body["externalUrl"]) == external


@pytest.mark.parametrize(
    "provider_url",
    [
        "javascript:alert(document.cookie)",
        "data:text/html,<script>alert(1)</script>",
        "/p/relative",
        "ftp://boost.test/p",
    ],
)
def test_a_provider_url_that_is_not_absolute_http_is_not_handed_to_partners(owner, provider_url):
    account = connected_account(owner, "tiktok", "managed.js")
    with receiver(lambda r: (200, {"id": "mp-2", "url": provider_url}, {})) as (url, _):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["externalId"], body["externalUrl"]) == ("published", "mp-2", None), body
    webhook = Event.objects.get(type="scheduled_post.published").data
    assert webhook["externalUrl"] is None, webhook


def test_a_provider_url_over_plain_http_is_handed_to_partners(owner):
    # Providers are told (API.md, _provider_answer) that an absolute http(s) URL is kept: http too.
    account = connected_account(owner, "tiktok", "managed.http")
    with receiver(lambda r: (200, {"id": "mp-3", "url": "http://boost.test/p/3"}, {})) as (url, _):
        managed_provider(project=owner.project, name="Boost", endpoint_url=url)
        scheduled = schedule_now(owner, account["id"], mode="managed")
        run_dispatcher()
    body = post(owner, scheduled["id"])
    assert (body["status"], body["externalId"], body["externalUrl"]) == ("published", "mp-3", "http://boost.test/p/3")
