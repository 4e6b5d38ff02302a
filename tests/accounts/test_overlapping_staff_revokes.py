"""Staff revoking overlapping selections of accounts at the same moment, on real PostgreSQL connections in threads:
two staff members pressing "Revoke (disconnect) selected accounts" on lists that share accounts (an incident, two
people on call), the worker doing the rest of one staff member's revoke while the partner's DELETE comes in, and
an off-boarding of the organization while a colleague revokes some of its accounts.

Each race is forced with a transaction held open on another connection (tests/concurrency.py: held_open and
wait_until_waiting), never a sleep. What each person sees must hold whoever wins a row: no error page and no 500;
each account disconnected once (one `social_account.disconnected` event, one "disconnected" status line naming
who did it, and the admin history line only for the staff member who did it); the platform's grant revoked once;
each queued post canceled once; each lease released once and never charged after; and what each staff member is
told ("disconnected" / "already disconnected", the off-boarding's count) adds up to what happened."""

import threading
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.utils import timezone

from accounts import services, tasks
from accounts.models import Event, SocialAccount
from accounts.platforms.sandbox.models import Token
from billing import services as billing_services
from billing.models import LedgerEntry
from leasing import services as leasing_services
from leasing.models import Lease
from scheduling.models import ScheduledPost
from scheduling.services import post_publish, posts_cancel, posts_claim_due, posts_retry
from tests.accounts.oauth_helpers import connected_account
from tests.concurrency import held_open, on_its_own_connection, wait_until_waiting
from tests.leasing.helpers import add_pool, get_request, request_accounts
from tests.scheduling.publish_helpers import run_dispatcher, sandbox_posts, schedule_now
from tests.staff import messages_of, staff_login, superuser

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/accounts/socialaccount/"
REVOKE = "Admin action: Revoke (disconnect) selected accounts"
WAIT = 30


def an_incident(tenant, *, connected: int = 4, leased: int = 2) -> dict:
    """`connected` TikTok accounts of distinct creators (sandbox grants) and `leased` leased accounts, each with a
    queued post due tomorrow, the wallet topped up for their charges. Returns {"accounts": ids in key order (the
    order a bulk revoke works in), "connected", "leased", "posts": account id → post id, "usernames"}."""
    usernames = {}
    for n in range(connected):
        username = f"overlap.creator{n}"
        usernames[connected_account(tenant, "tiktok", username)["id"]] = username
    add_pool(leased, price=4900)
    accepted = request_accounts(tenant, leased)
    leasing_services.lease_assign(request_id=accepted["requestId"], auto=True)
    leased_ids = get_request(tenant, accepted["requestId"])["socialAccountIds"]
    assert len(leased_ids) == leased
    billing_services.wallet_top_up(organization=tenant.org, cents=50_000)
    tomorrow = timezone.now() + timedelta(days=1)
    accounts = sorted([*usernames, *leased_ids])
    posts = {pk: schedule_now(tenant, pk, when=tomorrow)["id"] for pk in accounts}
    return {"accounts": accounts, "connected": list(usernames), "leased": leased_ids, "posts": posts,
            "usernames": usernames}  # fmt: skip


@pytest.fixture
def grant_revokes(monkeypatch):
    """Every revoke of a grant at the platform (services._revoke_at_platform), by the token it revoked with,
    from whichever thread made it."""
    made: list[str] = []
    lock = threading.Lock()
    real = services._revoke_at_platform

    def counted(**kwargs):
        with lock:
            made.append(kwargs["tokens"].access_token)
        return real(**kwargs)

    monkeypatch.setattr(services, "_revoke_at_platform", counted)
    return made


@pytest.fixture
def whole_selection_in_the_request(monkeypatch):
    """Room in one request for the platform calls of every revoke here (6 calls, 2 connected accounts, otherwise):
    the pages then say what became of each selected account themselves. The worker's half is raced on its own
    below (social_accounts_revoke_by_staff)."""
    monkeypatch.setattr("accounts.admin.WEB_REQUEST_PLATFORM_CALLS", 60)


def revoke_in_admin(client, ids: list[str]) -> list[str]:
    """The staff member's revoke of `ids` from the list (the confirmation page's Yes): the messages shown."""
    data = {"action": "revoke_accounts", ACTION_CHECKBOX_NAME: ids, "index": "0", "post": "yes"}
    response = client.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200, response.status_code
    return messages_of(response)


def told_done(messages: list[str]) -> set[str]:
    return {pk for m in messages if m.startswith("Social account ") and ": disconnected, " in m
            for pk in [m.split(" ")[2].rstrip(":")]}  # fmt: skip


def told_already(messages: list[str]) -> set[str]:
    return {pk for m in messages if m.startswith("Social account ") and ": already disconnected" in m
            for pk in [m.split(" ")[2].rstrip(":")]}  # fmt: skip


def disconnected_once_by(pk: str) -> str:
    """The one "disconnected" line of the account's status history: its source (who did it)."""
    account = SocialAccount.objects.get(pk=pk)
    assert account.status == "disconnected"
    lines = list(account.status_changes.filter(to_status="disconnected").values_list("source", flat=True))
    assert len(lines) == 1, (pk, lines)
    events = [e for e in Event.objects.filter(type="social_account.disconnected") if e.data["id"] == pk]
    assert len(events) == 1, (pk, events)
    return lines[0]


def admin_history(pk: str) -> list[tuple[int, str]]:
    return list(
        LogEntry.objects.filter(content_type__model="socialaccount", object_id=pk).values_list(
            "user_id", "change_message"
        )
    )


def assert_everything_ended_once(tenant, incident, grant_revokes, charged_before):
    """What must hold whoever won each account: posts canceled, leases released once and not charged after,
    each creator's grant revoked at the platform once."""
    for pk, post_id in incident["posts"].items():
        post = ScheduledPost.objects.get(pk=post_id)
        assert post.status == "canceled", (pk, post.status)
    for pk in incident["leased"]:
        assert Lease.objects.filter(social_account_id=pk).count() == 1
        assert Lease.objects.get(social_account_id=pk).released_at is not None
    for username in incident["usernames"].values():
        assert not Token.objects.filter(platform="tiktok", username=username, revoked_at__isnull=True).exists()
    assert len(grant_revokes) == len(set(grant_revokes)) == len(incident["connected"]), grant_revokes
    billing_services.lease_charges_run(now=timezone.now() + timedelta(days=45))
    assert LedgerEntry.objects.filter(organization=tenant.org).count() == charged_before


def test_two_staff_revoking_overlapping_selections_at_once_each_do_their_part_once(
    owner, grant_revokes, whole_selection_in_the_request
):
    """Two on-call staff each select accounts of the incident, overlapping in the middle, and press Go at the
    same moment. A third connection holds the first shared account's row, so that both reach it and queue there,
    then lets them go: one disconnects it, the other is told it was done by the first; the second shared account
    is raced freely."""
    incident = an_incident(owner)
    accounts = incident["accounts"]
    first_pick, second_pick = accounts[:4], accounts[2:]
    shared = set(first_pick) & set(second_pick)
    ops1, ops2 = superuser("ops1"), superuser("ops2")
    one, two = staff_login(Client(), ops1), staff_login(Client(), ops2)
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    told: dict[str, list[str]] = {}
    errors: list = []

    held = lambda: list(SocialAccount.objects.select_for_update().filter(pk=accounts[2]))  # noqa: E731
    with held_open(held):
        threads = [
            on_its_own_connection(lambda: told.__setitem__("ops1", revoke_in_admin(one, first_pick)), errors),
            on_its_own_connection(lambda: told.__setitem__("ops2", revoke_in_admin(two, second_pick)), errors),
        ]
        wait_until_waiting("accounts_socialaccount", count=2)
    for thread in threads:
        thread.join(WAIT)

    assert errors == [], errors
    staff = {"ops1": ops1, "ops2": ops2}
    picks = {"ops1": set(first_pick), "ops2": set(second_pick)}
    for pk in accounts:
        by = disconnected_once_by(pk)
        (who,) = [name for name in staff if by.endswith(f"by staff {name}")]
        # The admin history names only the one who did it; the page told them "disconnected", and the other
        # one (if it was in their selection too) "already disconnected", nothing credited to them.
        assert admin_history(pk) == [(staff[who].pk, REVOKE)], (pk, admin_history(pk))
        assert pk in told_done(told[who])
        for other in set(staff) - {who}:
            assert pk not in told_done(told[other])
            assert (pk in told_already(told[other])) == (pk in picks[other])
    for name, pick in picks.items():
        # Every selected account is accounted for once on each page.
        assert told_done(told[name]) | told_already(told[name]) == pick, (name, told[name])
        assert not told_done(told[name]) & told_already(told[name])
    assert len(told_done(told["ops1"]) & shared) + len(told_done(told["ops2"]) & shared) == len(shared)
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


def test_the_partners_delete_during_the_workers_revoke_waits_and_is_answered_disconnected(owner, grant_revokes):
    """The worker doing the rest of a staff member's revoke (social_accounts_revoke_by_staff) holds an account it
    has just disconnected, uncommitted, when the partner's DELETE of the same account comes in: the DELETE waits,
    then answers 200 disconnected with nothing canceled or released by it, and nothing in its name."""
    incident = an_incident(owner, connected=2, leased=1)
    ops = superuser("ops1")
    connected, leased = incident["connected"][0], incident["leased"][0]
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    answers: dict[str, object] = {}
    errors: list = []

    def worker():
        return tasks.social_accounts_revoke_by_staff(
            sorted([connected, leased]), ops.pk, None, "Revoke (disconnect) selected accounts"
        )

    with held_open(worker) as by_worker:
        partner = [
            on_its_own_connection(
                lambda pk=pk: answers.__setitem__(pk, owner.client.delete(f"/v1/social-accounts/{pk}")), errors
            )  # fmt: skip
            for pk in (connected, leased)
        ]
        wait_until_waiting("accounts_socialaccount", count=2)
    for thread in partner:
        thread.join(WAIT)

    assert errors == [], errors
    assert by_worker.result == {"done": 2, "leftAlone": 0}
    for pk in (connected, leased):
        assert answers[pk].status_code == 200, answers[pk].content
        body = answers[pk].json()
        assert body["status"] == "disconnected" and body["canceledScheduledPosts"] == 0 and not body["released"]
        assert disconnected_once_by(pk).endswith("by staff ops1")
        assert admin_history(pk) == [(ops.pk, REVOKE)]
        assert ScheduledPost.objects.get(pk=incident["posts"][pk]).canceled_by.endswith("by staff ops1")
    assert Lease.objects.get(social_account_id=leased).released_by_id == ops.pk
    # The account nobody raced is left as it was.
    other = incident["connected"][1]
    assert SocialAccount.objects.get(pk=other).status == "connected"
    incident["posts"].pop(other)
    incident["connected"].remove(other)
    incident["usernames"].pop(other)
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


def test_staff_revoking_accounts_the_partner_is_disconnecting_are_told_and_credited_nothing(
    owner, grant_revokes, whole_selection_in_the_request
):
    """The partner's DELETE of an account holds it (disconnected, not committed yet) as a staff member's revoke of
    a selection including it reaches it: the staff member's page says it was disconnected by the partner, and
    their history has no line for it; the rest of their selection is theirs."""
    incident = an_incident(owner, connected=3, leased=1)
    accounts = incident["accounts"]
    # A connected account (its DELETE is the partner's "revoke"; a leased one's is their "lease release"): the
    # accounts' ids are random, so a place in the list would be either.
    partners = incident["connected"][0]
    ops = superuser("ops1")
    client = staff_login(Client(), ops)
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    told: list[list[str]] = []
    errors: list = []

    with held_open(lambda: services.social_account_revoke(account_id=partners, api_key=owner.key)) as held:
        staff = on_its_own_connection(lambda: told.append(revoke_in_admin(client, accounts)), errors)
        wait_until_waiting("accounts_socialaccount")
    staff.join(WAIT)

    assert errors == [], errors
    assert held.result.revoked
    (messages,) = told
    assert told_already(messages) == {partners}
    assert told_done(messages) == set(accounts) - {partners}
    assert f"(revoke by API key {owner.key.name} (" in next(m for m in messages if partners in m)
    assert disconnected_once_by(partners).startswith("revoke by API key") and admin_history(partners) == []
    for pk in set(accounts) - {partners}:
        assert disconnected_once_by(pk).endswith("by staff ops1")
        assert admin_history(pk) == [(ops.pk, REVOKE)]
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


def test_an_off_boarding_during_a_colleagues_revoke_counts_only_the_accounts_it_disconnected(owner, grant_revokes):
    """Staff revoke two accounts of an organization (the worker's half of their revoke, held open: disconnected,
    not committed) while a colleague off-boards the organization. The off-boarding read them still connected,
    waits for them, finds them disconnected by the colleague, and must not report them as its own: its page said
    "4 account(s) disconnected" for an organization of which it disconnected 2, beside the colleague's own history
    crediting them the other 2. (Their posts were canceled before, so that the off-boarding's cancel of the
    organization's posts does not queue behind the revoke instead, and then read them disconnected already.)"""
    incident = an_incident(owner, connected=3, leased=1)
    accounts = incident["accounts"]
    colleagues = sorted([incident["connected"][0], incident["leased"][0]])
    ops1, ops2 = superuser("ops1"), superuser("ops2")
    assert posts_cancel(post_ids=[incident["posts"][pk] for pk in colleagues], actor=ops1).skipped == {}
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    results: list = []
    errors: list = []

    def revoke():
        return tasks.social_accounts_revoke_by_staff(colleagues, ops1.pk, None, "Revoke (disconnect) selected accounts")

    with held_open(revoke) as held:
        offboarding = on_its_own_connection(
            lambda: results.append(services.organization_offboard(organization_id=owner.org.pk, actor=ops2)), errors
        )
        wait_until_waiting("accounts_socialaccount")
    offboarding.join(WAIT)

    assert errors == [], errors
    assert held.result == {"done": 2, "leftAlone": 0}
    (result,) = results
    its_own = sorted(set(accounts) - set(colleagues))
    assert sorted(result.accounts_disconnected) == its_own
    assert f"{len(its_own)} account(s) disconnected (0 lease(s) released)" in result.report()
    for pk in colleagues:
        assert disconnected_once_by(pk).endswith("by staff ops1")
        assert admin_history(pk) == [(ops1.pk, REVOKE)]
    for pk in its_own:
        assert disconnected_once_by(pk).endswith("by staff ops2")
    assert Lease.objects.get(social_account_id=incident["leased"][0]).released_by_id == ops1.pk
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


def test_an_off_boarding_and_a_colleagues_revoke_from_the_admin_at_once_add_up(
    owner, grant_revokes, whole_selection_in_the_request
):
    """Both pages at once: one staff member revokes most of an organization's accounts from the list while another
    off-boards it. A third connection holds an account both reach, so that both queue there, then lets them go;
    the accounts after it are raced freely. Whoever won each: it is disconnected once, and the off-boarding's
    "N account(s) disconnected (L lease(s) released)" and the colleague's "disconnected" lines split the
    accounts between them, each also in the history of the one who did it."""
    incident = an_incident(owner)
    accounts = incident["accounts"]
    pick = accounts[1:5]
    ops1, ops2 = superuser("ops1"), superuser("ops2")
    one, two = staff_login(Client(), ops1), staff_login(Client(), ops2)
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    told: dict[str, list[str]] = {}
    errors: list = []

    def offboard():
        data = {"action": "offboard_organizations", ACTION_CHECKBOX_NAME: [owner.org.pk], "index": "0", "post": "yes"}
        response = two.post("/admin/accounts/organization/", data, follow=True)
        assert response.status_code == 200, response.status_code
        told["ops2"] = messages_of(response)

    held = lambda: list(SocialAccount.objects.select_for_update().filter(pk=accounts[2]))  # noqa: E731
    with held_open(held):
        threads = [
            on_its_own_connection(lambda: told.__setitem__("ops1", revoke_in_admin(one, pick)), errors),
            on_its_own_connection(offboard, errors),
        ]
        wait_until_waiting("accounts_socialaccount", count=2)
    for thread in threads:
        thread.join(WAIT)

    assert errors == [], errors
    by = {pk: disconnected_once_by(pk) for pk in accounts}
    colleagues = {pk for pk, source in by.items() if source.endswith("by staff ops1")}
    offboarding = {pk for pk, source in by.items() if source.endswith("by staff ops2")}
    assert colleagues | offboarding == set(accounts) and not colleagues & offboarding, by
    assert told_done(told["ops1"]) == colleagues
    assert told_already(told["ops1"]) == set(pick) - colleagues
    leases = len(offboarding & set(incident["leased"]))
    (report,) = [m for m in told["ops2"] if "off-boarded:" in m]
    assert f" {len(offboarding)} account(s) disconnected ({leases} lease(s) released)" in report, (report, by)
    for pk in accounts:
        # The off-boarding's history line is the organization's; an account's is only the colleague's revoke.
        assert admin_history(pk) == ([(ops1.pk, REVOKE)] if pk in colleagues else []), pk
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


def test_two_workers_doing_overlapping_halves_of_two_staff_revokes_add_up(owner, grant_revokes):
    """Two staff members' revokes each handed the same accounts to the bulk worker (too many for their pages), and
    two worker processes run the two tasks at once: held on a shared account, both queue there. Each account is
    done by one task, in that staff member's history only, and the tasks' results (done, left alone) add up."""
    incident = an_incident(owner)
    accounts = incident["accounts"]
    first_half, second_half = accounts[:4], accounts[1:]
    ops1, ops2 = superuser("ops1"), superuser("ops2")
    charged_before = LedgerEntry.objects.filter(organization=owner.org).count()
    results: dict[str, dict] = {}
    errors: list = []

    def worker(name, user, ids):
        description = "Revoke (disconnect) selected accounts"
        return lambda: results.__setitem__(name, tasks.social_accounts_revoke_by_staff(ids, user.pk, None, description))

    held = lambda: list(SocialAccount.objects.select_for_update().filter(pk=accounts[1]))  # noqa: E731
    with held_open(held):
        threads = [
            on_its_own_connection(worker("ops1", ops1, first_half), errors),
            on_its_own_connection(worker("ops2", ops2, second_half), errors),
        ]
        wait_until_waiting("accounts_socialaccount", count=2)
    for thread in threads:
        thread.join(WAIT)

    assert errors == [], errors
    staff = {"ops1": ops1, "ops2": ops2}
    done = {name: set() for name in staff}
    for pk in accounts:
        (who,) = [name for name in staff if disconnected_once_by(pk).endswith(f"by staff {name}")]
        assert admin_history(pk) == [(staff[who].pk, REVOKE)], pk
        done[who].add(pk)
    assert results["ops1"] == {"done": len(done["ops1"]), "leftAlone": len(first_half) - len(done["ops1"])}
    assert results["ops2"] == {"done": len(done["ops2"]), "leftAlone": len(second_half) - len(done["ops2"])}
    assert_everything_ended_once(owner, incident, grant_revokes, charged_before)


# Staff canceling queued posts while the dispatcher claims them (scheduling.services.posts_cancel against
# posts_claim_due): each post is either canceled (never sent) or sent once (and staff told it was not canceled).

POSTS = "/admin/scheduling/scheduledpost/"


def cancel_in_admin(client, ids: list[str]) -> list[str]:
    response = client.post(POSTS, {"action": "cancel_posts", ACTION_CHECKBOX_NAME: ids, "index": "0"}, follow=True)
    assert response.status_code == 200, response.status_code
    return messages_of(response)


def test_a_staff_cancel_held_open_leaves_its_posts_to_it_and_the_dispatcher_sends_the_others(owner):
    """Staff's cancel of two due posts is not committed yet when the dispatcher ticks: the tick neither waits nor
    sends them (they are locked: skipped), and sends the third; once the cancel commits, the two stay canceled
    and no later tick sends them."""
    account = connected_account(owner, "tiktok", "cancel.race")["id"]
    posts = [schedule_now(owner, account)["id"] for _ in range(3)]
    canceled, sent = sorted(posts[:2]), posts[2]
    ops = superuser("ops1")

    with held_open(lambda: posts_cancel(post_ids=canceled, actor=ops)) as held:
        assert run_dispatcher() == 1  # eager: claimed and published on this connection, the two skipped
        assert ScheduledPost.objects.get(pk=sent).status == "published"

    assert held.result.done == canceled and held.result.skipped == {}
    run_dispatcher()
    for pk in canceled:
        post = ScheduledPost.objects.get(pk=pk)
        assert post.status == "canceled" and post.canceled_by == "staff ops1", post.canceled_by
    assert len(sandbox_posts("tiktok", "cancel.race")) == 1


def test_staff_canceling_a_post_the_dispatcher_is_claiming_are_told_it_is_publishing_and_it_is_sent_once(owner):
    """The dispatcher's claim of a due post is not committed yet when staff cancel it with another one not due
    yet: the cancel waits for the claim, then cancels only the other and tells staff the claimed one is being
    published; that one is sent once, the other never."""
    account = connected_account(owner, "tiktok", "claim.race")["id"]
    due = schedule_now(owner, account)["id"]
    later = schedule_now(owner, account, when=timezone.now() + timedelta(days=1))["id"]
    ops = superuser("ops1")
    client = staff_login(Client(), ops)
    told: list[list[str]] = []
    errors: list = []

    with held_open(posts_claim_due) as claim:
        staff = on_its_own_connection(lambda: told.append(cancel_in_admin(client, sorted([due, later]))), errors)
        wait_until_waiting("scheduling_scheduledpost")
    staff.join(WAIT)

    assert errors == [], errors
    assert claim.result == [due]
    (messages,) = told
    assert f"Scheduled post {later}: canceled." in messages, messages
    assert f"Scheduled post {due}: Only queued posts can be canceled; this one is publishing." in messages, messages
    history = LogEntry.objects.filter(content_type__model="scheduledpost")
    assert list(history.values_list("object_id", "user_id")) == [(later, ops.pk)]
    assert post_publish(post_id=due) == "published"
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=due).status == "published"
    assert ScheduledPost.objects.get(pk=later).status == "canceled"
    assert len(sandbox_posts("tiktok", "claim.race")) == 1


def test_a_staff_retry_held_open_while_the_dispatcher_sends_the_accounts_other_post_sends_each_once(owner):
    """Staff's retry of a failed post holds its account's row (as the revoke's lock order asks) and the post,
    requeued and not committed yet, when the dispatcher ticks and sends another due post of the same account: the
    whole tick runs meanwhile (a retry of a long list does not stall publishing on its accounts' locks), does not
    send the retried post from before the retry committed, and the next tick sends it. Each post reaches the
    platform once."""
    account = connected_account(owner, "tiktok", "retry.race")["id"]
    failed, due = schedule_now(owner, account)["id"], schedule_now(owner, account)["id"]
    ScheduledPost.objects.filter(pk=failed).update(status="failed", error_code="PLATFORM_REJECTED")
    ops = superuser("ops1")
    ticks: list = []
    errors: list = []

    with held_open(lambda: posts_retry(post_ids=[failed], actor=ops)) as held:
        tick = on_its_own_connection(lambda: ticks.append(run_dispatcher()), errors)
        tick.join(WAIT)
        assert not tick.is_alive(), "the tick waited for the staff member's retry"

    assert errors == [], errors
    assert held.result.done == [failed] and held.result.skipped == {}
    assert ticks == [1]
    assert ScheduledPost.objects.get(pk=due).status == "published"
    run_dispatcher()
    assert ScheduledPost.objects.get(pk=failed).status == "published"
    assert len(sandbox_posts("tiktok", "retry.race")) == 2
