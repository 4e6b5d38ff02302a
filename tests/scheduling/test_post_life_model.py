"""A model of a scheduled post's life, driven in random orders (hypothesis's stateful testing).

What it models: one partner with a TikTok and an Instagram account (two TikTok for a second account of one
platform) connected through the real OAuth flow; the partner schedules publish and draft posts, cancels them,
revokes accounts and sends the customer through reauth links (the API, through the test client); the platforms
(the sandbox, in-process) refuse, throttle, time out and kill tokens; the workers run the ticks as beat would
(the dispatcher's claim, its publish, status check and preparation messages held and run later in any order,
or lost with their worker; the metrics sync, the token health tick, the webhook relay) while the clock moves;
staff retry, retry anyway and cancel through the services the admin calls.

After every step, what a user would notice: a post is accepted by the platform at most once (the sandbox's own
records, each post having its own media URL) unless staff said "retry anyway"; a post that is published or
canceled never changes again, a failed one only by a staff retry; no post of a disconnected account is queued;
each post has one published-or-failed event per time it ended, the newest agreeing with what the partner's GET
shows (the events as recorded in the outbox: no endpoint receives them); every failed post carries one of
API.md's failure codes; the partner's queued list agrees with the posts. It found the requeue of a claimed post
onto a revoked account (tests/scheduling/test_requeue_on_revoked_account.py).

Deterministic (derandomized, no example database) and bounded for CI."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from accounts import services as account_services
from accounts.models import Event, SocialAccount
from accounts.platforms.sandbox.models import Post as SandboxPost
from accounts.tasks import social_accounts_health_tick
from accounts.webhooks.tasks import webhooks_tick
from config.api.errors import Conflict
from scheduling import services
from scheduling.models import ScheduledPost
from scheduling.tasks import dispatch_due_posts, global_platform_posts_sync, prepare_post, publish_posts, resolve_post
from tests.accounts.oauth_helpers import connected_account, reauthorize
from tests.conftest import make_tenant
from tests.model_support import ModelMachine, every_row, run_held, run_in_ci
from tests.platform_helpers import inject_fault, invalidate_tokens
from tests.reliability.outcomes import FAILURE_CODES
from tests.scheduling.publish_helpers import MEDIA, iso
from tests.staff import staff_member

pytestmark = pytest.mark.django_db(transaction=True)


# What a partner's schedule call varies: which account, the mode, the media, how far ahead.
SCHEDULED = dict(
    account=st.integers(0, 2),
    mode=st.sampled_from(["publish", "draft"]),
    media_type=st.sampled_from(["video", "image"]),
    delay=st.sampled_from([0, 60, 20 * 60, 2 * 3600]),
)


# The worker messages a tick hands out: held, to be run later in any order (or lost with their worker).
HELD_TASKS = {publish_posts.name, resolve_post.name, prepare_post.name}
# Each example runs in its own stretch of time, after the previous example's (whose leftovers are ended).
BASE = datetime(2027, 3, 1, 9, tzinfo=UTC)
EXAMPLE_SPAN = timedelta(days=60)


class PostLife(ModelMachine):
    HELD = HELD_TASKS

    def starts_at(self):
        return BASE + self.n * EXAMPLE_SPAN

    def _begin(self):
        self.tenant = make_tenant(f"Model {self.n}")
        self.staff = staff_member(f"ops{self.n}")
        self.accounts = []
        for platform, suffix in (("tiktok", "tt"), ("instagram", "ig"), ("tiktok", "tt2")):
            username = f"m{self.n}.{suffix}"
            body = connected_account(self.tenant, platform, username)
            self.accounts.append({"id": body["id"], "platform": platform, "username": username})
        self.posts: dict[str, dict] = {}  # id → media URL, account, last status seen, staff retries
        self.numbers = itertools.count()

    def _end(self):
        # End what this example left, so that later examples' ticks (in later time) do not work on it.
        ScheduledPost.objects.filter(organization_id=self.tenant.org.pk, status__in=["queued", "publishing"]).update(
            status="canceled"
        )
        SocialAccount.objects.filter(organization_id=self.tenant.org.pk).exclude(status="disconnected").update(
            status="disconnected", disconnected_at=datetime.now(UTC)
        )

    # --- the partner ------------------------------------------------------------------------------

    @rule(**SCHEDULED)
    def schedule(self, account, mode, media_type, delay):
        client, target = self.tenant.client, self.accounts[account]
        n = next(self.numbers)
        caption = f"model {self.n} post {n}"
        # A media URL of its own: what the sandbox received is found by it (a TikTok inbox upload has no caption).
        media_url = MEDIA[media_type][0].replace("cdn.acme.test/", f"cdn.acme.test/model-{self.n}-{n}/")
        container = client.post(
            f"/v1/projects/{self.tenant.project.id}/content",
            {"mediaType": media_type, "mediaUrls": [media_url], "caption": caption},
            format="json",
        )
        assert container.status_code == 201, container.content
        now = datetime.now(UTC)
        response = client.post(
            f"/v1/content/{container.json()['id']}/schedule",
            {
                "targets": [{"socialAccountId": target["id"], "mode": mode}],
                "scheduledFor": iso(now + timedelta(seconds=delay)),
            },
            format="json",
        )
        disconnected = SocialAccount.objects.get(pk=target["id"]).status == "disconnected"
        if disconnected:
            assert response.status_code == 422, response.content
            return
        assert response.status_code == 201, response.content
        (post,) = response.json()["scheduledPosts"]
        assert post["status"] == "queued"
        self.posts[post["id"]] = {
            "media_url": media_url,
            "account": account,
            "last": "queued",
            "retries": 0,
            "anyway": 0,
        }

    @rule(**SCHEDULED)
    def schedule_another(self, account, mode, media_type, delay):
        self.schedule(account, mode, media_type, delay)  # scheduling is what partners do most

    def _pick(self, index: int) -> str | None:
        # No precondition on what exists: what exists depends on the system, and hypothesis replays choices.
        ids = sorted(self.posts)
        return ids[index % len(ids)] if ids else None

    @rule(index=st.integers(0, 63))
    def partner_cancels(self, index):
        post_id = self._pick(index)
        if post_id is None:
            return
        before = ScheduledPost.objects.get(pk=post_id).status
        response = self.tenant.client.delete(f"/v1/scheduled-posts/{post_id}")
        if before == "queued":
            assert response.status_code == 200, response.content
            assert response.json()["status"] == "canceled"
        else:
            assert response.status_code == 409, response.content
            assert response.json()["error"]["code"] == "POST_NOT_CANCELABLE"

    @rule(account=st.integers(0, 2), action=st.sampled_from(["revoke", "reauth", "reauth"]))
    def account_changes(self, account, action):
        """The partner revokes the account, or the customer follows a reauth link (less often a revoke: it is for
        good, and the model has three accounts)."""
        target = self.accounts[account]
        if action == "revoke":
            response = self.tenant.client.delete(f"/v1/social-accounts/{target['id']}")
            assert response.status_code == 200, response.content
            assert response.json()["status"] == "disconnected"
            return
        status = SocialAccount.objects.get(pk=target["id"]).status
        if status == "disconnected":
            link = self.tenant.client.post(
                f"/v1/projects/{self.tenant.project.id}/social/reauth-url",
                {"socialAccountId": target["id"]},
                format="json",
            )
            assert link.status_code == 409, link.content
            return
        answer = reauthorize(self.tenant, target["id"], target["platform"], target["username"])
        assert answer.status_code == 302, answer.content

    # --- the platforms ----------------------------------------------------------------------------

    @rule(
        account=st.integers(0, 2),
        kind=st.sampled_from(["rate_limited", "server_error", "timeout", "reject", "invalidate-tokens"]),
        count=st.integers(1, 3),
    )
    def platform_misbehaves(self, account, kind, count):
        """The next calls for the user fail (refused, throttled, lost, content rejected), or every token the
        user holds dies (the app removed, a password change)."""
        target = self.accounts[account]
        if kind == "invalidate-tokens":
            invalidate_tokens(target["platform"], target["username"])
        else:
            inject_fault(target["platform"], target["username"], kind, count)

    # --- the workers ------------------------------------------------------------------------------

    @rule()
    def dispatcher_tick(self):
        dispatch_due_posts()

    @rule(index=st.integers(0, 15), lost=st.sampled_from([False] * 5 + [True]))
    def a_worker_takes_a_message(self, index, lost):
        """A worker runs one of the messages handed out, in any order; now and then it dies first."""
        message = self._take_held(index)
        if message is not None and not lost:
            run_held(*message)

    @rule()
    def beat_and_healthy_workers(self):
        """The common case: a few seconds pass, the tick runs and the workers run every message it handed out."""
        self.traveller.shift(timedelta(seconds=3))
        dispatch_due_posts()
        while self.held:
            task, args, kwargs = self.held.pop(0)
            run_held(task, args, kwargs)

    @rule(tick=st.sampled_from(["metrics", "health", "relay"]))
    def other_ticks(self, tick):
        {"metrics": global_platform_posts_sync, "health": social_accounts_health_tick, "relay": webhooks_tick}[tick]()

    @rule(seconds=st.sampled_from([1, 40, 200, 400, 3600, 25 * 3600]))
    def time_passes(self, seconds):
        self.traveller.shift(timedelta(seconds=seconds))

    # --- staff ------------------------------------------------------------------------------------

    @rule(index=st.integers(0, 63), action=st.sampled_from(["retry", "retry anyway", "cancel"]))
    def staff_acts(self, index, action):
        """Staff retry, retry anyway or cancel a post, through the services the admin's actions call: most often
        one the admin's filter shows them (failed ones to retry, queued ones to cancel), now and then any."""
        wanted = {"retry": "failed", "retry anyway": "failed", "cancel": "queued"}[action]
        shown = sorted(
            ScheduledPost.objects.filter(pk__in=list(self.posts), status=wanted).values_list("pk", flat=True)
        )
        post_id = shown[index % len(shown)] if shown and index % 4 else self._pick(index)
        if post_id is None:
            return
        anyway = action == "retry anyway"
        try:
            if action == "cancel":
                services.post_cancel(post_id=post_id, actor=self.staff)
            else:
                services.post_retry(post_id=post_id, actor=self.staff, checked_on_platform=anyway)
        except Conflict:
            return
        if action == "cancel":
            return
        model = self.posts[post_id]
        assert model["last"] == "failed", (post_id, model)
        model["retries"] += 1
        model["anyway"] += anyway
        model["last"] = ScheduledPost.objects.get(pk=post_id).status
        assert model["last"] == "queued"

    # --- what users would notice ------------------------------------------------------------------

    @invariant()
    def what_users_see_holds(self):
        if not hasattr(self, "posts"):
            return
        org = self.tenant.org.pk
        listed = self._partner_list()
        rows = {post.pk: post for post in ScheduledPost.objects.filter(organization_id=org)}
        assert set(listed) == set(self.posts) == set(rows), "the partner's list shows exactly the scheduled posts"
        account_status = dict(SocialAccount.objects.filter(organization_id=org).values_list("pk", "status"))
        account_services.events_sequence(organization_id=org)
        events: dict[str, list[Event]] = {}
        for event in Event.objects.filter(organization_id=org, type__startswith="scheduled_post.").order_by(
            "position", "created_at"
        ):
            events.setdefault(event.data["id"], []).append(event)
        for post_id, model in self.posts.items():
            shown = listed[post_id]
            status = shown["status"]
            # Published or canceled is for good; failed only until a staff retry (recorded by staff_retries).
            if model["last"] in ("published", "canceled"):
                assert status == model["last"], f"{post_id} went from {model['last']} to {status}"
            if model["last"] == "failed":
                assert status == "failed", f"{post_id} went from failed to {status} without a staff retry"
            model["last"] = status
            # Never accepted twice by the platform (unless staff said it was not there and retried anyway).
            accepted = self._accepted_on_platform(model)
            assert accepted <= 1 + model["anyway"], f"{post_id} accepted {accepted} times by the platform"
            if status == "published":
                assert accepted >= 1, f"{post_id} is published but the platform has none of it"
            # A disconnected account's posts are never queued.
            if account_status[shown["socialAccountId"]] == "disconnected":
                assert status != "queued", f"{post_id} is queued on a disconnected account"
            # Every failure is one of API.md's codes.
            if status == "failed":
                assert shown["error"] and shown["error"]["code"] in FAILURE_CODES, shown
            # One published-or-failed event per time the post ended; the newest says what GET says.
            own = events.get(post_id, [])
            ended = model["retries"] + (status in ("published", "failed"))
            assert len(own) == ended, (post_id, status, model, [e.type for e in own])
            # Nothing after a publish; a later event only after a failure that staff retried.
            assert all(event.type == "scheduled_post.failed" for event in own[:-1]), (post_id, [e.type for e in own])
            if status in ("published", "failed"):
                newest = own[-1]
                assert newest.type == f"scheduled_post.{status}", (post_id, status, newest.type)
                for field in ("status", "error", "externalId", "publishedAt"):
                    assert newest.data[field] == shown[field], (post_id, field, newest.data[field], shown[field])
        # The partner's queued list is what is still to be published: no more, no less.
        queued = {post_id for post_id, body in listed.items() if body["status"] == "queued"}
        assert set(self._partner_list(status="queued")) == queued

    def _partner_list(self, **filters) -> dict[str, dict]:
        return every_row(self.tenant.client, f"/v1/projects/{self.tenant.project.id}/scheduled-posts", **filters)

    def _accepted_on_platform(self, model: dict) -> int:
        account = self.accounts[model["account"]]
        rows = SandboxPost.objects.filter(
            platform=account["platform"], username=account["username"], media__contains=[{"url": model["media_url"]}]
        )
        if account["platform"] == "tiktok":
            # An init refused as spam is recorded with what it will say; a FAILED one never went live.
            rows = rows.filter(fail_reason="").exclude(status="FAILED")
        return rows.count()


def test_random_lives_of_posts_keep_what_partners_and_staff_see_consistent():
    run_in_ci(
        PostLife,
        steps=40,
        histories=0xC37F4A71ED49A67CBD50A6EE63CB2059EC90B5067F2B18EC6E3840CFD2C893747F6C2D93C8B6A123973C690CA38BB9FA,
    )
