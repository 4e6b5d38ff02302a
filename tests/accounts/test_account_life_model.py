"""A model of a connected account's life, driven in random orders (hypothesis's stateful testing).

What it models: two organizations (the first with two projects, the second with one) and two platform users on
each of TikTok and Instagram, any of whom may be connected in any project, so the same person is bound in both
organizations and in two projects of one. The partner asks for consent links and the customer approves or
declines them on the sandbox's consent page, connects the same user again, follows reauth links (as the right
user, or as another, which must change nothing) and the partner revokes (the API, through the test client);
staff revoke through the service the admin's action runs; the platforms kill a user's tokens, refuse calls for a
while, and tell Layers that the user removed the app (TikTok's `authorization.removed`, Instagram's deauthorize
callback and its data deletion request); the health tick runs as beat would run it while the clock moves, days
and weeks at a time, so tokens expire and are refreshed; the partner schedules a post now and then.

After every step, what a partner would notice: each project's list and each account's GET agree with the model
(disconnected never listed; the other organization gets a 404); the status changes only as API.md says (a live
account goes to `reauth_required` only when its token is dead at the platform (the sandbox says so) or the user
removed the app, comes back only by a reauth or a connect of the same user, on the same id, with a new token; a
disconnected one never comes back); each account's `social_account.*` events are the ones its changes call for,
the newest agreeing with GET; no token is stored in clear, nor appears in a response or an event; no answer is a
500; no post of a disconnected account is still queued.

Deterministic (derandomized, no example database) and bounded for CI."""

import itertools
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from accounts import services as account_services
from accounts.models import Event, SocialAccount
from accounts.platforms.sandbox import oauth as sandbox_oauth
from accounts.platforms.sandbox.models import Fault, Token
from accounts.tasks import social_accounts_health_tick
from scheduling.models import ScheduledPost
from tests.accounts.oauth_helpers import RETURN_URL, follow_callback
from tests.conftest import make_tenant
from tests.model_support import ModelMachine, run_in_ci
from tests.platform_helpers import consent, inject_fault, invalidate_tokens
from tests.scheduling.publish_helpers import MEDIA, iso
from tests.staff import staff_member

pytestmark = pytest.mark.django_db(transaction=True)

PLATFORMS = ("tiktok", "instagram")
# What a customer is sent back with when the platform refused the code exchange or the profile read.
PLATFORM_FAILURES = ("token_exchange_failed", "platform_error")
# Where an account may be bound: (organization, project); the first organization has two projects.
PLACES = ((0, 0), (0, 1), (1, 0))
BASE = datetime(2028, 1, 3, 9, tzinfo=UTC)
EXAMPLE_SPAN = timedelta(days=400)
MOST_SHIFT = timedelta(days=300)  # an example never moves its clock past its own span

place = st.sampled_from(PLACES)
platform = st.sampled_from(PLATFORMS)
user = st.integers(0, 1)


class AccountLife(ModelMachine):
    def starts_at(self):
        return BASE + self.n * EXAMPLE_SPAN

    def _begin(self):
        self.start = self.starts_at()  # MOST_SHIFT is counted from here
        self.tenants = [make_tenant(f"Life {self.n} A", projects=2), make_tenant(f"Life {self.n} B")]
        self.staff = staff_member(f"life-ops{self.n}")
        self.accounts: dict[str, dict] = {}  # id → its place, platform, user, status and expected events
        self.posts: dict[str, str] = {}  # post id → account id
        self.links: list[dict] = []  # links made and not necessarily opened
        self.offboarded = False  # the second organization, by staff
        self.bodies: list[str] = []  # every answer given since the last check, for the token scan
        self.secrets: set[str] = set()  # every token Layers stored
        self.numbers = itertools.count()

    def _end(self):
        for tenant in self.tenants:
            SocialAccount.objects.filter(organization_id=tenant.org.pk).exclude(status="disconnected").update(
                status="disconnected", disconnected_at=datetime.now(UTC)
            )

    # --- helpers ----------------------------------------------------------------------------------

    def username(self, platform: str, user: int) -> str:
        return f"life{self.n}.{platform[:2]}{user}"

    def call(self, tenant, method: str, path: str, body=None):
        client = self.tenants[tenant].client
        response = (
            getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)
        )
        assert response.status_code < 500, (method, path, response.status_code, response.content[:500])
        self.bodies.append(response.content.decode())
        return response

    def browse(self, response):
        assert response.status_code < 500, response.content[:500]
        self.bodies.append(response.content.decode() + response.get("Location", ""))
        return response

    def latest(self, where, platform, user) -> dict | None:
        """The newest binding the model knows of that user in that project (live or not)."""
        mine = [a for a in self.accounts.values() if (a["place"], a["platform"], a["user"]) == (where, platform, user)]
        return mine[-1] if mine else None

    def live(self, where, platform, user) -> dict | None:
        found = self.latest(where, platform, user)
        return found if found and found["status"] != "disconnected" else None

    def closed(self, org: int) -> bool:
        """Whether that organization was off-boarded: its key is then refused (401), which is checked here."""
        if not (org == 1 and self.offboarded):
            return False
        refused = self.call(org, "get", f"/v1/projects/{self.tenants[org].project.id}/social-accounts")
        assert refused.status_code == 401, refused.content
        return True

    def project(self, where):
        org, index = where
        return self.tenants[org].projects[index]

    def link(self, where, platform, reauth_of: str | None = None) -> dict:
        """A consent link from the API (connect, or reauth of `reauth_of`)."""
        if reauth_of is None:
            path = f"/v1/projects/{self.project(where).id}/social/oauth-url"
            body = {"platform": platform, "returnUrl": RETURN_URL}
        else:
            path = f"/v1/projects/{self.project(where).id}/social/reauth-url"
            body = {"socialAccountId": reauth_of}
        link = self.call(where[0], "post", path, body)
        assert link.status_code == 200, link.content
        return link.json()

    def follow(self, org, link, platform, user, decision="approve"):
        """The customer's consent on `link` as that user, then the callback; (oauth-status, Location), or None
        when the platform refused a call of the flow (a fault injected for the user): the state failed with
        one of API.md's codes for it and nothing else changed."""
        faulty = self.faulty(platform, user)
        location = consent(platform, link["authorizeUrl"], self.username(platform, user), decision)
        answer = self.browse(follow_callback(location))
        assert answer.status_code == 302, answer.content[:300]
        status = self.call(org, "get", f"/v1/social/oauth-status/{link['state']}")
        assert status.status_code == 200, status.content
        status = status.json()
        if faulty and status["status"] == "failed" and status["error"]["code"] in PLATFORM_FAILURES:
            return None
        return status, answer["Location"]

    def consent_flow(self, where, platform, user, decision="approve", reauth_of: str | None = None):
        return self.follow(where[0], self.link(where, platform, reauth_of), platform, user, decision)

    def faulty(self, platform, user) -> bool:
        return Fault.objects.filter(platform=platform, username=self.username(platform, user), remaining__gt=0).exists()

    def token(self, account_id: str) -> tuple[str | None, str | None]:
        row = SocialAccount.objects.get(pk=account_id)
        return row.access_token, row.refresh_token

    # --- the partner and the customer ---------------------------------------------------------------

    @rule(where=place, platform=platform, user=user)
    def connect(self, where, platform, user):
        """Consent approved on a new link: a live binding of the same user in the project is reused (same id, a
        new token, `reconnected` only if it needed a reauth); otherwise a new id, `connected`."""
        if self.closed(where[0]):
            return
        before = self.live(where, platform, user)
        old_token = self.token(before["id"])[0] if before else None
        flow = self.consent_flow(where, platform, user)
        if flow is None:
            assert self.token(before["id"])[0] == old_token if before else True
            return
        status, location = flow
        assert status["status"] == "completed", status
        assert location.split("#")[0] == RETURN_URL, location
        self.connected(where, platform, user, before, old_token, status["socialAccountId"])

    def connected(self, where, platform, user, before, old_token, account_id):
        if before is not None:
            assert account_id == before["id"], "a live binding of the same user in the project is reused"
            assert self.token(account_id)[0] != old_token, "connecting again stores the new token"
            if before["status"] == "reauth_required":
                before["events"].append("social_account.reconnected")
            before["status"] = "connected"
            return
        assert account_id not in self.accounts, "a connect after a revoke mints a new id"
        self.accounts[account_id] = {
            "id": account_id,
            "place": where,
            "platform": platform,
            "user": user,
            "status": "connected",
            "events": ["social_account.connected"],
        }

    @rule(where=place, platform=platform, user=user)
    def customer_declines(self, where, platform, user):
        if self.closed(where[0]):
            return
        flow = self.consent_flow(where, platform, user, decision="deny")
        if flow is None:
            return
        status, location = flow
        assert status["status"] == "failed" and status["error"] == {"code": "access_denied"}, status
        assert parse_qs(urlsplit(location).query.split("#")[0])["layers_oauth_error"] == ["access_denied"]

    @rule(where=place, platform=platform, user=user, as_other=st.sampled_from([False, False, True]))
    def reauth(self, where, platform, user, as_other):
        """The customer follows a reauth link: as the account's own user, the same id, connected, a new token and
        `reconnected`; as another user, `account_mismatch` and nothing changes; a disconnected one is a 409."""
        account = self.latest(where, platform, user)
        if account is None or self.closed(where[0]):
            return
        if account["status"] == "disconnected":
            link = self.call(
                where[0],
                "post",
                f"/v1/projects/{self.project(where).id}/social/reauth-url",
                {"socialAccountId": account["id"]},
            )
            assert link.status_code == 409 and link.json()["error"]["code"] == "ACCOUNT_DISCONNECTED", link.content
            return
        old = self.token(account["id"])
        flow = self.consent_flow(where, platform, 1 - user if as_other else user, reauth_of=account["id"])
        if flow is None:
            assert self.token(account["id"]) == old, "a failed reauth leaves the token as it was"
            return
        status, location = flow
        if as_other:
            assert status["status"] == "failed" and status["error"] == {"code": "account_mismatch"}, status
            assert self.token(account["id"]) == old, "a reauth as another user leaves the token as it was"
            return
        assert status["status"] == "completed" and status["socialAccountId"] == account["id"], status
        assert location.split("#")[0] == RETURN_URL, location
        assert self.token(account["id"])[0] not in (None, old[0]), "a reauth rotates the token"
        account["status"] = "connected"
        account["events"].append("social_account.reconnected")

    @rule(where=place, platform=platform, user=user, by_staff=st.sampled_from([False, False, True]))
    def revoke(self, where, platform, user, by_staff):
        account = self.latest(where, platform, user)
        if account is None:
            return
        was = account["status"]
        if self.closed(where[0]):
            by_staff = True
        if by_staff:
            account_services.social_accounts_revoke(account_ids=[account["id"]], actor=self.staff, may_release=False)
        else:
            response = self.call(where[0], "delete", f"/v1/social-accounts/{account['id']}")
            assert response.status_code == 200, response.content
            body = response.json()
            assert body["status"] == "disconnected" and body["id"] == account["id"], body
            if was == "disconnected":
                assert body["canceledScheduledPosts"] == 0, body
        if was != "disconnected":
            account["status"] = "disconnected"
            account["events"].append("social_account.disconnected")

    @rule(where=place, platform=platform, user=user)
    def schedule_a_post(self, where, platform, user):
        account = self.latest(where, platform, user)
        if account is None or self.closed(where[0]):
            return
        org, n = where[0], next(self.numbers)
        media = "image" if platform == "instagram" else "video"
        container = self.call(
            org,
            "post",
            f"/v1/projects/{self.project(where).id}/content",
            {"mediaType": media, "mediaUrls": MEDIA[media][:1], "caption": f"life {self.n} post {n}"},
        )
        assert container.status_code == 201, container.content
        # Far ahead: nothing publishes; the model checks only what a revoke does to queued posts.
        when = datetime.now(UTC) + timedelta(days=360)
        response = self.call(
            org,
            "post",
            f"/v1/content/{container.json()['id']}/schedule",
            {"targets": [{"socialAccountId": account["id"], "mode": "publish"}], "scheduledFor": iso(when)},
        )
        if account["status"] == "disconnected":
            assert response.status_code == 422, response.content
            return
        assert response.status_code == 201, response.content
        self.posts[response.json()["scheduledPosts"][0]["id"]] = account["id"]

    @rule(where=place, platform=platform, user=user, reauth=st.booleans())
    def partner_makes_a_link(self, where, platform, user, reauth):
        """A link the customer opens later (or never): a connect link, or a reauth link of the account."""
        account = self.latest(where, platform, user) if reauth else None
        if reauth and (account is None or account["status"] == "disconnected") or self.closed(where[0]):
            return
        link = self.link(where, platform, account["id"] if account else None)
        self.links.append(
            {**link, "where": where, "platform": platform, "user": user, "account": account, "done": None}
        )

    @rule(
        index=st.integers(0, 15),
        other_user=st.sampled_from([False, False, True]),
        deny=st.sampled_from([False] * 4 + [True]),
    )
    def customer_opens_a_link(self, index, other_user, deny):
        """The customer opens a link made earlier, whatever happened since: the account revoked or reauthorized,
        the user removed the app, the link expired or already used."""
        if not self.links:
            return
        link = self.links[index % len(self.links)]
        where, platform, account = link["where"], link["platform"], link["account"]
        user = 1 - link["user"] if other_user else link["user"]
        expired = datetime.now(UTC) >= datetime.fromisoformat(link["expiresAt"].replace("Z", "+00:00"))
        before = self.live(where, platform, user) if account is None else account
        old = self.token(before["id"]) if before else None
        if where[0] == 1 and self.offboarded:
            # The off-boarding expired the partner's pending links (its key cannot read oauth-status any more).
            location = consent(platform, link["authorizeUrl"], self.username(platform, user), "approve")
            answer = self.browse(follow_callback(location))
            error = parse_qs(urlsplit(answer["Location"].split("#")[0]).query).get("layers_oauth_error")
            assert error in (["expired"], ["already_used"]), answer["Location"]
            assert (self.token(before["id"]) if before else None) == old
            return
        flow = self.follow(where[0], link, platform, user, "deny" if deny else "approve")
        if flow is None:
            assert (self.token(before["id"]) if before else None) == old
            if link["done"] is None:  # failed for the platform's refusal: used, as any other ending
                link["done"] = self.call(where[0], "get", f"/v1/social/oauth-status/{link['state']}").json()
            return
        status, location = flow
        error = parse_qs(urlsplit(location.split("#")[0]).query).get("layers_oauth_error")
        if link["done"] is not None:
            # An expired state stays expired (status `expired`, not failed): it says so again.
            again = ["expired"] if link["done"]["status"] == "expired" else ["already_used"]
            assert error == again, (location, link)
            assert status == link["done"], "a used link's oauth-status stays as it ended"
            assert (self.token(before["id"]) if before else None) == old
            return
        if expired:
            assert error == ["expired"], location
            assert status["status"] == "expired" or status["error"] == {"code": "expired"}, status
            link["done"] = status
            return
        link["done"] = status
        if deny:
            assert error == ["access_denied"] and status["error"] == {"code": "access_denied"}, (location, status)
            return
        if account is not None:
            if account["status"] == "disconnected":
                assert error == ["already_used"] and status["error"] == {"code": "already_used"}, (location, status)
                return
            if other_user:
                assert error == ["account_mismatch"], location
                assert self.token(account["id"]) == old, "a reauth as another user leaves the token as it was"
                return
            assert status["status"] == "completed" and status["socialAccountId"] == account["id"], status
            assert self.token(account["id"])[0] not in (None, old[0]), "a reauth rotates the token"
            account["status"] = "connected"
            account["events"].append("social_account.reconnected")
            return
        assert error is None and status["status"] == "completed", (location, status)
        self.connected(where, platform, user, before, old[0] if old else None, status["socialAccountId"])

    @rule()
    def staff_offboard_the_second_organization(self):
        """Ops off-board the second partner (organization_offboard, as the admin's action runs it): its keys
        revoked, its links expired, its accounts disconnected. The first partner's bindings of the same people
        keep their grant (the _grants_kept check)."""
        if self.offboarded:
            return
        account_services.organization_offboard(organization_id=self.tenants[1].org.pk, actor=self.staff)
        self.offboarded = True
        for account in self.accounts.values():
            if account["place"][0] == 1 and account["status"] != "disconnected":
                account["status"] = "disconnected"
                account["events"].append("social_account.disconnected")

    # --- the platforms ----------------------------------------------------------------------------

    @rule(platform=platform, user=user)
    def platform_kills_tokens(self, platform, user):
        invalidate_tokens(platform, self.username(platform, user))

    @rule(
        platform=platform,
        user=user,
        kind=st.sampled_from(["rate_limited", "server_error", "timeout"]),
        count=st.integers(1, 3),
    )
    def platform_misbehaves(self, platform, user, kind, count):
        inject_fault(platform, self.username(platform, user), kind, count)

    @rule(platform=platform, user=user, delete_data=st.booleans())
    def user_removes_the_app(self, platform, user, delete_data):
        """The user removes the app in the platform's settings and the platform tells Layers (signed): every
        live binding of theirs, in both organizations, needs a reauth at once; with Instagram's data deletion
        request, what Layers keeps of the person is erased as well."""
        # A second later than any step before: Meta's signed request carries whole seconds and is answered by
        # its payload, so a second request in the same frozen second would be its replay.
        self.traveller.shift(timedelta(seconds=1))
        body = {"username": self.username(platform, user)}
        if platform == "instagram":
            body["deleteData"] = delete_data
        answer = Client().post(f"/sandbox/{platform}/_control/deauthorize", body, content_type="application/json")
        assert answer.status_code == 200, answer.content
        answer = answer.json()
        assert answer["webhook"]["status"] == 200, answer
        if platform == "instagram" and delete_data:
            assert answer["dataDeletion"]["status"] == 200, answer
        for account in self.accounts.values():
            if (account["platform"], account["user"]) == (platform, user) and account["status"] == "connected":
                account["status"] = "reauth_required"
                account["events"].append("social_account.needs_reauth")
        if platform == "instagram" and delete_data:
            for account in self.accounts.values():
                if (account["platform"], account["user"]) == (platform, user):
                    row = SocialAccount.objects.get(pk=account["id"])
                    assert not row.access_token_enc and not row.refresh_token_enc, "the erased tokens are gone"
                    # Every binding was granted before the request: the person is gone from what partners read.
                    org = account["place"][0]
                    if org == 1 and self.offboarded:
                        shown = {"handle": row.identity.handle, "displayName": row.identity.display_name}
                    else:
                        shown = self.call(org, "get", f"/v1/social-accounts/{account['id']}").json()
                        assert shown["avatarUrl"] is None, shown
                    assert shown["handle"] == "" and shown["displayName"] == "", shown
                    for event in Event.objects.filter(type__startswith="social_account.", data__id=account["id"]):
                        data = event.data
                        assert (data["handle"], data["displayName"], data["avatarUrl"]) == ("", "", None), data

    # --- beat and the clock -------------------------------------------------------------------------

    @rule()
    def health_tick(self):
        social_accounts_health_tick()

    @rule(seconds=st.sampled_from([60, 3600, 7 * 3600, 25 * 3600, 8 * 86400, 55 * 86400]))
    def time_passes(self, seconds):
        if datetime.now(UTC) + timedelta(seconds=seconds) < self.start + MOST_SHIFT:
            self.traveller.shift(timedelta(seconds=seconds))

    @rule()
    def a_day_of_health_ticks(self):
        """A day (and a bit) passes with beat running the health tick: every live account whose token is dead at the
        platform (and for which the platform answers) is then reauth_required; none whose token is good."""
        if datetime.now(UTC) + timedelta(days=2) >= self.start + MOST_SHIFT:
            return
        faulty = set(Fault.objects.filter(remaining__gt=0).values_list("platform", "username"))
        # A day and a tick: a token is verified once it was last checked more than a day ago.
        for _ in range(5):
            self.traveller.shift(timedelta(hours=6))
            social_accounts_health_tick()
        for account in self.accounts.values():
            row = SocialAccount.objects.get(pk=account["id"])
            key = (account["platform"], self.username(account["platform"], account["user"]))
            if row.status == "connected" and key not in faulty:
                assert not self.dead_at_platform(row), f"{row.pk} is connected with a dead token after a day"

    # --- what a partner would notice ----------------------------------------------------------------

    def dead_at_platform(self, row: SocialAccount) -> str | None:
        """Why the platform (the sandbox) refuses the account's token for good, or None when it can still be
        used or renewed (a TikTok access token past its expiry, with a good refresh token)."""
        access, refresh = row.access_token, row.refresh_token
        if not access:
            return "no token stored"
        kinds = (Token.Kind.ACCESS, Token.Kind.LONG_LIVED, Token.Kind.SHORT_LIVED)
        found = sandbox_oauth.find_token(platform=row.platform, raw=access, kinds=kinds)
        problem = "unknown to the platform" if found is None else sandbox_oauth.token_problem(found)
        if problem is None:
            return None
        if refresh:
            renew = sandbox_oauth.find_token(platform=row.platform, raw=refresh, kinds=(Token.Kind.REFRESH,))
            if renew is not None and sandbox_oauth.token_problem(renew) is None:
                return None
        return problem

    @invariant()
    def what_partners_see_holds(self):
        if not hasattr(self, "accounts"):
            return
        listed = {}
        for org, tenant in enumerate(self.tenants):
            for index, project in enumerate(tenant.projects if not self.closed(org) else []):
                response = self.call(org, "get", f"/v1/projects/{project.id}/social-accounts?limit=200")
                assert response.status_code == 200, response.content
                body = response.json()
                assert body["nextCursor"] is None
                for item in body["data"]:
                    assert item["id"] not in listed, f"{item['id']} listed twice"
                    listed[item["id"]] = ((org, index), item)
        expected_listed = {pk for pk, a in self.accounts.items() if a["status"] != "disconnected"}
        # Before the model follows what the system did (a flip it allows), only what cannot change by itself.
        for pk, account in self.accounts.items():
            if account["place"][0] == 1 and self.offboarded:
                status = SocialAccount.objects.get(pk=pk).status
                assert status == "disconnected", f"{pk} of the off-boarded partner is {status}"
                other = self.call(0, "get", f"/v1/social-accounts/{pk}")
                assert other.status_code == 404, f"the other organization sees {pk}: {other.content[:200]}"
                continue
            own = self.call(account["place"][0], "get", f"/v1/social-accounts/{pk}")
            assert own.status_code == 200, own.content
            other = self.call(1 - account["place"][0], "get", f"/v1/social-accounts/{pk}")
            foreign = 401 if account["place"][0] == 0 and self.offboarded else 404  # the off-boarded key
            assert other.status_code == foreign, f"the other organization sees {pk}: {other.content[:200]}"
            shown = own.json()
            assert shown["projectId"] == self.project(account["place"]).id
            self._follow(account, shown["status"])
            # reauthRequiredAt stays on a disconnected account that needed a reauth first (its history).
            if shown["status"] != "disconnected":
                assert (shown["reauthRequiredAt"] is not None) == (shown["status"] == "reauth_required"), shown
            assert shown["connectedAt"] is not None, shown
            assert (shown["disconnectedAt"] is not None) == (shown["status"] == "disconnected"), shown
            if account["status"] != "disconnected":
                assert pk in listed and listed[pk][0] == account["place"], f"{pk} not listed in its project"
                assert listed[pk][1]["status"] == shown["status"], (listed[pk][1], shown)
        expected_listed = {pk for pk, a in self.accounts.items() if a["status"] != "disconnected"}
        assert set(listed) == expected_listed, "the lists show exactly the live accounts"
        self._events_agree()
        self._posts_agree()
        self._tokens_kept_secret()
        self._grants_kept()

    def _follow(self, account: dict, shown: str) -> None:
        """What the system did by itself, if API.md allows it: only connected → reauth_required, when the token
        is dead at the platform; the model then expects the one `needs_reauth`."""
        if shown == account["status"]:
            return
        assert account["status"] == "connected" and shown == "reauth_required", (
            f"{account['id']} went from {account['status']} to {shown} by itself"
        )
        row = SocialAccount.objects.get(pk=account["id"])
        assert self.dead_at_platform(row), f"{account['id']} went to reauth_required with a good token"
        account["status"] = shown
        account["events"].append("social_account.needs_reauth")

    def _events_agree(self) -> None:
        seen: dict[str, list[Event]] = {}
        for tenant in self.tenants:
            account_services.events_sequence(organization_id=tenant.org.pk)
            for event in Event.objects.filter(
                organization_id=tenant.org.pk, type__startswith="social_account."
            ).order_by("position", "created_at"):
                assert event.data["id"] in self.accounts, event.data
                assert self.accounts[event.data["id"]]["place"][0] == self.tenants.index(tenant), event.data
                seen.setdefault(event.data["id"], []).append(event)
        for pk, account in self.accounts.items():
            events = seen.get(pk, [])
            assert [e.type for e in events] == account["events"], (pk, [e.type for e in events], account["events"])
            assert events[-1].data["status"] == account["status"], (pk, events[-1].type, events[-1].data)

    def _posts_agree(self) -> None:
        for post_id, account_id in self.posts.items():
            account = self.accounts[account_id]
            want = "canceled" if account["status"] == "disconnected" else "queued"
            if account["place"][0] == 1 and self.offboarded:
                assert ScheduledPost.objects.get(pk=post_id).status == want, post_id
                continue
            response = self.call(account["place"][0], "get", f"/v1/scheduled-posts/{post_id}")
            assert response.status_code == 200, response.content
            assert response.json()["status"] == want, (post_id, account["status"], response.json())

    def _grants_kept(self) -> None:
        """No live account holds a token Layers itself withdrew at the platform (the revoke of another binding
        of the same user, a grant bound to nothing) or a refresh token rotated away: the platform's grant is
        one per user and app, and it goes only with the last live holder (API.md, revoke)."""
        kinds = tuple(Token.Kind)
        for pk, account in self.accounts.items():
            if account["status"] == "disconnected":
                continue
            row = SocialAccount.objects.get(pk=pk)
            for raw in (row.access_token, row.refresh_token):
                found = sandbox_oauth.find_token(platform=row.platform, raw=raw, kinds=kinds) if raw else None
                if found is not None and found.revoked_reason in ("revoked", "rotated"):
                    raise AssertionError(f"{pk} ({account['status']}) holds a token {found.revoked_reason} by Layers")

    def _tokens_kept_secret(self) -> None:
        for row in SocialAccount.objects.filter(organization__in=[t.org.pk for t in self.tenants]):
            for clear, stored in ((row.access_token, row.access_token_enc), (row.refresh_token, row.refresh_token_enc)):
                if clear:
                    assert clear not in stored, f"{row.pk}'s token is stored in clear"
                    self.secrets.add(clear)
        events = [
            json.dumps(data)
            for data in Event.objects.filter(organization__in=[t.org.pk for t in self.tenants]).values_list(
                "data", flat=True
            )
        ]
        for text in itertools.chain(self.bodies, events):
            for secret in self.secrets:
                assert secret not in text, "a token appears in a response or an event"
        self.bodies.clear()


def test_random_lives_of_connected_accounts_keep_what_partners_see_consistent():
    run_in_ci(
        AccountLife,
        steps=22,
        histories=0x2497CD7E0779EA2D0AA027C7D734FE40CBD1B50E4E47925422D84697B7AA5B54A2160B9ABB85314291E6818FD9B90D1B,
    )
