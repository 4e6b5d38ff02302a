"""State changes of leasing: pool accounts, lease requests and their fulfilment, releases.

Fulfilment is three steps so that no transaction is held open across a platform call and every step is
visible: (1) reserve — lock the request and the chosen pool accounts, request → provisioning;
(2) check — each reserved account's token is verified with TikTok, outside any transaction;
(3) bind — create the leased social accounts, the leases and the first charge, request → assigned / partial.
A `partial` request is assigned the rest of its count the same way later (a top-up). A failing check or bind
puts the request in `failed` (back in `partial` for a top-up: it has leases) and returns the accounts to the
pool. The partner reads a fixed reason (FAILED_CHECK / FAILED_BIND: nothing was leased, staff assign again);
what went wrong — pool handles, the platform's or the database's own words — goes to the log and the
request's staff-only history."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from time import monotonic, sleep

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.utils import timezone

from accounts import crypto
from accounts.models import PlatformIdentity, SocialAccount
from accounts.platforms.base import PlatformError, PlatformUnavailable, RateLimited, TokenInvalid, TokenSet
from accounts.platforms.http import ANSWER_DEADLINE_TIMEOUTS
from accounts.platforms.scopes import publishing_scopes_missing
from accounts.services import (
    KEY_PREFIX,
    event_record,
    organization_offboarded_at,
    partner_write_refused_if_offboarded,
    social_account_reconnect,
    social_account_removed_by_the_creator,
    social_account_status_record,
    staff_source,
    store_tokens,
)
from accounts.token_margin import refresh_due, refresh_due_q
from config.api.errors import ApiError, Conflict, Validation
from config.batches import BatchOutcome
from config.dbreconnect import write_again_after_a_dropped_connection
from config.queueing import enqueue_on_commit
from config.text import shorten
from leasing.geo import language_tag
from leasing.models import Lease, LeaseAction, LeaseRequest, PoolAccount

log = logging.getLogger(__name__)


class LeaseError(ApiError):
    """A staff action that cannot be done as asked; the message says why (shown in the admin / command)."""

    status, code = 409, "LEASE_CONFLICT"


# Why a pool account was retired for its token (status_note). Connecting it on TikTok again
# (pool_account_connect) cures these, and only these: an account ops retired by hand stays retired.
RETIRED_NO_TOKENS = "imported without tokens: connect the account before leasing it"
RETIRED_DEAD_AT_ASSIGNMENT = "token missing or invalid at assignment: reconnect it"
RETIRED_DEAD_AFTER_RELEASE = "token invalid after release: reconnect it"
RETIRED_DEAD_AT_REFRESH = "token refresh refused by TikTok: reconnect it"
RETIRED_REAUTH_AT_RELEASE = "needed a reauth when it was released (reauth_required): reconnect it"
TOKEN_RETIREMENTS = (
    RETIRED_NO_TOKENS,
    RETIRED_DEAD_AT_ASSIGNMENT,
    RETIRED_DEAD_AFTER_RELEASE,
    RETIRED_DEAD_AT_REFRESH,
    RETIRED_REAUTH_AT_RELEASE,
)
# The platform_user_id of an account imported without tokens in live mode, until it is connected.
PENDING_USER_PREFIX = "pending:"


# What the partner reads in `failureReason` when an assignment fails. Fixed texts: the problems themselves name
# pool accounts the partner never had and quote TikTok or PostgreSQL (constraint names, internal ids).
FAILED_CHECK = (
    "TikTok did not confirm the accounts picked for this request, so nothing was leased. "
    "Layers staff will assign accounts again."
)
FAILED_BIND = (
    "The accounts picked for this request could not be added to the project, so nothing was leased. "
    "Layers staff will assign accounts again."
)
FAILED_INTERRUPTED = (
    "The assignment was interrupted before it finished, so nothing was leased. Layers staff will assign accounts again."
)


def _audit(*, action: str, actor=None, api_key=None, request=None, lease=None, **detail) -> LeaseAction:
    """One history row. `actor` is the staff member; `api_key` the partner's key when a partner's API call did it
    (kept as its id, name and prefix, never the key: LeaseAction.by names it); neither for automation."""
    if api_key is not None:
        detail["api_key"] = {"id": api_key.pk, "name": api_key.name, "prefix": f"{KEY_PREFIX}{api_key.prefix}"}
    return LeaseAction.objects.create(action=action, actor=actor, request=request, lease=lease, detail=detail)


# --- Requests ---------------------------------------------------------------------------------------


# Requests waiting for Layers staff (not yet assigned, partly assigned or rejected), and how many one
# organization may have: staff work the queue oldest first, and a partner's loop filing requests buried every
# later partner's behind pages of its own.
WAITING = (*LeaseRequest.OPEN, LeaseRequest.Status.PROVISIONING)
MAX_WAITING_REQUESTS_PER_ORGANIZATION = 20


def lease_request_create(
    *,
    project,
    count: int,
    vertical: str,
    language: str,
    geos: list[str],
    audience: str = "",
    note: str = "",
    api_key=None,
) -> LeaseRequest:
    """A partner asks for `count` warmed TikTok accounts in a niche (validated by the API); `api_key`, the key
    the partner called with, is named in the request's history. Raises ApiError 401 when the organization was
    off-boarded since the key check: the off-boarding rejects the requests it finds open, and one committed
    after it stayed `requested` for good (no account is assigned to an off-boarded organization). Raises
    Validation (422) when the organization has MAX_WAITING_REQUESTS_PER_ORGANIZATION requests waiting already."""
    with transaction.atomic():
        # Under the organization's row lock (taken here): creations of one organization serialize on it, so
        # concurrent ones cannot pass the cap together.
        partner_write_refused_if_offboarded(organization_id=project.organization_id)
        waiting = LeaseRequest.objects.filter(organization_id=project.organization_id, status__in=WAITING).count()
        if waiting >= MAX_WAITING_REQUESTS_PER_ORGANIZATION:
            # No call changes a filed request's count: the partner can only wait, and ask for more accounts in
            # one request next time. `failed` ones are named: the partner may read them as over.
            message = (
                f"Your organization has {MAX_WAITING_REQUESTS_PER_ORGANIZATION} lease requests waiting for Layers "
                "already (requested, in review, provisioning or failed), the most it may have: file another once "
                "Layers has assigned, partly assigned or rejected one. One request may ask for up to 50 accounts."
            )
            raise Validation({"body": [message]}, message=message)
        request = LeaseRequest.objects.create(
            organization_id=project.organization_id,
            project=project,
            count=count,
            vertical=vertical.strip(),
            language=language,
            geos=[g.upper() for g in geos],
            audience=audience or "",
            note=note or "",
        )
        _audit(action="requested", api_key=api_key, request=request, count=count)
    return request


# `seen_reviewer` of lease_request_take: the caller does not say whom it saw (the command line, a script).
UNSEEN = object()


def _refuse_if_someone_else_reviews(request: LeaseRequest, actor, seen_reviewer) -> None:
    """Assigning or rejecting from a page (`seen_reviewer` given: the reviewer's id it showed, None for nobody)
    a request another staff member reviews raises LeaseError naming them: only "Take" used to check, and a
    colleague's stale page leased accounts (charging the partner) or rejected the request under their review,
    neither knowing. Acting on it takes taking it over first (lease_request_take), which the history records.
    The commands give no page (UNSEEN) and act as before. `request` is locked by the caller."""
    reviewer = request.reviewer
    if seen_reviewer is UNSEEN or reviewer is None or reviewer == actor:
        return
    if request.status not in LeaseRequest.OPEN:
        return  # a partial request's top-up: its review ended with its first assignment, and nobody takes it
    if reviewer.pk != seen_reviewer:
        raise LeaseError(
            f"{reviewer} took this request at {request.review_started_at:%H:%M:%S} UTC, while your page was open: "
            "nothing was done. Take it over first if you mean to act on it."
        )
    raise LeaseError(f"{reviewer} reviews this request: nothing was done. Take it over first if you mean to act on it.")


def lease_request_take(*, request_id: str, actor, seen_reviewer=UNSEEN) -> LeaseRequest:
    """A staff member takes a request (requested → in_review) so two people do not work it unknowingly.
    Taking one already in review by someone else reassigns it, and says so in the audit trail.

    `seen_reviewer` is the reviewer's id (None: nobody) as the staff member's page showed it. Someone else
    having taken the request since (two staff opened it together, both clicked "Take") raises LeaseError
    naming them, rather than taking it over from them without either knowing; the page then shows who has it,
    and taking it from there takes it over."""
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().get(pk=request_id)
        if request.status not in (
            LeaseRequest.Status.REQUESTED,
            LeaseRequest.Status.IN_REVIEW,
            LeaseRequest.Status.FAILED,
        ):
            raise LeaseError(f"This request is {request.status}; there is nothing to review.")
        previous = request.reviewer
        if seen_reviewer is not UNSEEN and previous is not None and previous != actor and previous.pk != seen_reviewer:
            raise LeaseError(
                f"{previous} took this request at {request.review_started_at:%H:%M:%S} UTC, while your page was "
                "open: it is theirs now. Take it again only if you mean to take it over from them."
            )
        request.status = LeaseRequest.Status.IN_REVIEW
        request.reviewer = actor
        request.review_started_at = timezone.now()
        request.save(update_fields=["status", "reviewer", "review_started_at"])
        _audit(action="taken", actor=actor, request=request, previous_reviewer=str(previous) if previous else None)
    return request


# The most a rejection reason holds (its column's size): the partner sees it whole, or it is refused.
REJECTION_REASON_MAX_LENGTH = LeaseRequest._meta.get_field("rejection_reason").max_length


def lease_request_reject(*, request_id: str, reason: str, actor=None, seen_reviewer=UNSEEN) -> LeaseRequest:
    """Reject an open request with a reason the partner sees; records `lease_request.rejected`.
    Raises LeaseError for an empty reason or one over REJECTION_REASON_MAX_LENGTH characters (it used to be
    cut silently: ops were told the partner sees the reason, and the partner got its beginning), and from a
    page (`seen_reviewer`) for a request someone else reviews (_refuse_if_someone_else_reviews)."""
    reason = (reason or "").strip()
    if not reason:
        raise LeaseError("A rejection needs a reason; the partner sees it.")
    if len(reason) > REJECTION_REASON_MAX_LENGTH:
        raise LeaseError(
            f"A rejection reason holds at most {REJECTION_REASON_MAX_LENGTH:,} characters (this one has "
            f"{len(reason):,}); the partner sees it whole. Shorten it; nothing was rejected."
        )
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().get(pk=request_id)
        if request.status == LeaseRequest.Status.PARTIAL:
            # Its leases are the partner's, billed and maybe posting: a rejection would say "no accounts" beside
            # them. Not topped up, it simply stays partial; the partner releases what they no longer want.
            raise LeaseError(
                "This request is partial: its leased accounts stay with the partner, so it is not rejected. It "
                "stays partial unless more accounts are assigned to it."
            )
        if request.status not in LeaseRequest.OPEN:
            raise LeaseError(f"This request is {request.status}; it can no longer be rejected.")
        _refuse_if_someone_else_reviews(request, actor, seen_reviewer)
        request.status = LeaseRequest.Status.REJECTED
        request.rejection_reason = reason
        # A failed attempt's reason says "Layers staff will assign accounts again": beside the rejection, the
        # partner (API and webhook) read two answers, one a promise nobody keeps. The attempt stays in the history.
        request.failure_reason = ""
        request.decided_at = timezone.now()
        request.save(update_fields=["status", "rejection_reason", "failure_reason", "decided_at"])
        _audit(action="rejected", actor=actor, request=request, reason=reason)
        from leasing.serializers import lease_request_data

        event_record(
            organization_id=request.organization_id, type="lease_request.rejected", data=lease_request_data(request)
        )
    return request


# --- Matching ---------------------------------------------------------------------------------------


def language_match(requested: str, offered: list[str]) -> str | None:
    """How one of the account's languages matches the requested one: "exact" when the language, the script
    (written, or implied: zh-TW is Traditional, zh-CN Simplified — leasing/geo.py) and the region when the
    request names one are the same; "region" when only the region differs (pt-PT for pt-BR, en-GB for en-US);
    None otherwise — another language, or another script of it (zh-Hans for zh-Hant), which a partner's
    audience cannot read. A tag with no script of a language written in one script agrees only with another
    tag without one (en-US, not en-Latn-US)."""
    want = language_tag(requested)
    best = None
    for tag in offered:
        have = language_tag(tag)
        if (have.language, have.script) != (want.language, want.script):
            continue
        if not want.region or have.region == want.region:
            return "exact"
        best = "region"
    return best


@dataclass(frozen=True)
class Candidate:
    account: PoolAccount
    exact_language: bool  # see language_match; only these are auto-assigned, the others need a person's pick
    geo_overlap: list[str]

    waiting: bool = False  # TikTok asked us to wait before refreshing its token (refresh_not_before)

    @property
    def rank_key(self):
        # Exact language first, then the widest geo overlap, cheaper, older. Any account TikTok told us to
        # leave alone for now goes after all the others: its token may need the refresh TikTok refuses until
        # then, and failing the partner's request on it while another account would do is worse than a
        # less ideal match. Still offered: staff may pick it, and it is the only match there may be.
        return (
            self.waiting,
            not self.exact_language,
            -len(self.geo_overlap),
            self.account.monthly_price_cents,
            self.account.created_at,
        )


def _users_bound_in_project(project_id: str) -> set[str]:
    """TikTok users with a live binding in the project (the partner connected them, or leased them before):
    binding a pool account of the same user there again is refused by one_live_binding_per_project."""
    return set(
        SocialAccount.objects.filter(project_id=project_id, platform="tiktok")
        .exclude(status=SocialAccount.Status.DISCONNECTED)
        .values_list("identity__platform_user_id", flat=True)
    )


def pool_candidates(*, request: LeaseRequest) -> list[Candidate]:
    """Available, warmed pool accounts matching the request's niche — same vertical, same language and
    script (another region of it ranked after, see language_match), at least one geo in common — best
    first. Partners are promised warmed accounts: one still warming up is never offered (ops mark it warm
    in the pool when it is ready). An account whose TikTok user is already bound in the request's project
    is not offered either: it could not be bound there, and auto-assign would pick it, and fail, every time.
    Nor is one without a token. One whose refresh TikTok told us to wait for (Retry-After) comes last."""
    geos = {g.upper() for g in request.geos}
    now = timezone.now()
    out = []
    for account in (
        PoolAccount.objects.filter(
            status=PoolAccount.Status.AVAILABLE,
            warmup_state=PoolAccount.Warmup.WARM,
            vertical__iexact=request.vertical,
        )
        .exclude(platform_user_id__in=_users_bound_in_project(request.project_id))
        # Nor one without a token (the admin refuses to make such an account available; an UPDATE by hand
        # would not): it would fail the partner's request at the token check, every time.
        .exclude(access_token_enc="")
        .order_by("created_at")
    ):
        match = language_match(request.language, account.languages)
        if match is None:
            continue
        overlap = sorted(geos & {g.upper() for g in account.geos})
        if not overlap:
            continue
        waiting = account.refresh_not_before is not None and account.refresh_not_before > now
        out.append(Candidate(account=account, exact_language=match == "exact", geo_overlap=overlap, waiting=waiting))
    return sorted(out, key=lambda c: c.rank_key)


# --- Assignment -------------------------------------------------------------------------------------


def lease_assign(
    *, request_id: str, pool_account_ids: list[str] | None = None, auto: bool = False, actor=None
) -> LeaseRequest:
    """Assign pool accounts to a request: the given ones, or with `auto` the best matches up to the
    remaining count. Fewer than `count` → `partial`, which may be assigned the rest later. Raises LeaseError
    with a clear message when the request is neither open nor partial, nothing is chosen, or a chosen account
    is not available (e.g. another staff member assigned it a moment ago). The token check and the binding
    run in this process: for the command line (`manage.py lease_assign`); the admin, a web request, hands them
    to a worker (lease_assign_start)."""
    reserved, attempt = _reserve(request_id=request_id, pool_account_ids=pool_account_ids, auto=auto, actor=actor)
    return _check_and_bind(request_id=request_id, reserved=reserved, attempt=attempt, actor=actor)


# What staff read when the worker's half of an assignment could not be queued.
ASSIGN_NOT_QUEUED = (
    "The token check could not be handed to the workers (the task queue did not take it): nothing was leased and "
    "the accounts are back in the pool. Assign again once the queue is back."
)


def lease_assign_start(
    *,
    request_id: str,
    pool_account_ids: list[str] | None = None,
    auto: bool = False,
    actor=None,
    seen_reviewer=UNSEEN,
    shown_prices: dict[str, int] | None = None,
) -> LeaseRequest:
    """An assignment from the admin: reserve the accounts as lease_assign does (the same LeaseErrors, at once),
    and leave the token check and the binding to a worker (the lease_assign_check task). Returns the request,
    `provisioning` until the worker is done; the request's page shows the outcome.

    Why not in the request: each account's check may take up to six TikTok calls (a refresh, the profile and
    its retry, twice: _verified_token), and a request of 50 accounts several hundred, each within its
    deadline, where a web request is given WEB_REQUEST_PLATFORM_CALLS (accounts.platforms.http): a deploy's
    SIGTERM cut the staff member's request mid-assignment, and gunicorn's timeout could too. A task that
    cannot be queued fails the attempt at once (accounts back in the pool, staff told why), rather than leaving
    the request `provisioning` until lease_requests_recover_interrupted gives up on it.

    `seen_reviewer`: as lease_request_reject's; checked under the request's lock, by the reservation.
    `shown_prices`: the monthly price (cents) the page showed for each pool account it listed. An account
    repriced since (the reservation reads its price under lock) raises LeaseError naming it, nothing reserved:
    the first month is charged at the price when it is bound, and ops chose it at the one they saw."""
    from billing.reports import usd_display
    from config.queueing import enqueue
    from leasing.tasks import lease_assign_check

    with transaction.atomic():  # a repriced account (below) undoes the reservation
        reserved, attempt = _reserve(
            request_id=request_id,
            pool_account_ids=pool_account_ids,
            auto=auto,
            actor=actor,
            seen_reviewer=seen_reviewer,
        )
        repriced = [
            f"@{a.handle} {usd_display(shown_prices[a.pk])} → {usd_display(a.monthly_price_cents)}"
            for a in reserved
            if shown_prices and a.pk in shown_prices and shown_prices[a.pk] != a.monthly_price_cents
        ]
        if repriced:
            raise LeaseError(
                f"Repriced since your page showed it (a month): {'; '.join(repriced)}. Nothing was assigned; "
                "check the new price below and assign again."
            )
    if not enqueue(lease_assign_check, request_id, attempt):
        return _fail(
            request_id=request_id,
            pool_ids=[p.pk for p in reserved],
            reason=FAILED_INTERRUPTED,
            problems=[ASSIGN_NOT_QUEUED],
            actor=actor,
            attempt=attempt,
        )
    return LeaseRequest.objects.get(pk=request_id)


def lease_assign_check(*, request_id: str, attempt: int) -> LeaseRequest:
    """The worker's half of lease_assign_start: check the tokens of the accounts attempt `attempt` (its
    "assigning" audit row) reserved, then bind them or fail the attempt, as lease_assign does. Idempotent: a
    request no longer provisioning for that attempt (done already, a message delivered twice, recovered after
    PROVISIONING_INTERRUPTED_AFTER, assigned again since) is left as it is."""
    request = LeaseRequest.objects.get(pk=request_id)
    started = LeaseAction.objects.filter(pk=attempt, request_id=request_id, action="assigning").first()
    if started is None or not _is_current_attempt(request, attempt):
        return request
    ids = started.detail.get("pool_account_ids") or []
    found = {account.pk: account for account in PoolAccount.objects.filter(pk__in=ids)}
    reserved = [found[pk] for pk in ids if pk in found]
    return _check_and_bind(request_id=request_id, reserved=reserved, attempt=attempt, actor=started.actor)


def _check_and_bind(*, request_id: str, reserved: list[PoolAccount], attempt: int, actor) -> LeaseRequest:
    problems, dead = _check_tokens(reserved)
    if problems:
        # A token TikTok refused will not come back by itself: that account leaves the pool (retired, with a
        # note for ops, as after a release), so that the next auto-assign does not pick and fail on it again.
        log.warning("token check of lease request %s failed: %s", request_id, "; ".join(problems))
        return _fail(
            request_id=request_id,
            pool_ids=[p.pk for p in reserved],
            reason=FAILED_CHECK,
            problems=problems,
            actor=actor,
            retire_ids=dead,
            attempt=attempt,
        )
    try:
        return _bind(request_id=request_id, pool_ids=[p.pk for p in reserved], actor=actor, attempt=attempt)
    except Exception as exc:
        log.exception("binding lease request %s failed", request_id)
        return _fail(
            request_id=request_id,
            pool_ids=[p.pk for p in reserved],
            reason=FAILED_BIND,
            problems=[f"binding failed: {exc}"],
            actor=actor,
            attempt=attempt,
        )


def _refuse_if_offboarded(request: LeaseRequest) -> None:
    """In the caller's transaction, with the request locked: no account is assigned to an off-boarded partner.
    Read under the off-boarding mark's row lock (organization_offboarded_at)."""
    offboarded_at = organization_offboarded_at(organization_id=request.organization_id)
    if offboarded_at is not None:
        raise LeaseError(
            f"The organization was off-boarded on {offboarded_at:%Y-%m-%d %H:%M} UTC: no account is assigned to it."
        )


def _reserve(
    *, request_id: str, pool_account_ids, auto: bool, actor, seen_reviewer=UNSEEN
) -> tuple[list[PoolAccount], int]:
    """Reserve the chosen accounts and move the request to `provisioning`; returns them and this attempt's
    id (its "assigning" audit row), which the rest of the assignment checks is still the request's current one.
    `seen_reviewer`: from a page, as lease_request_reject's (_refuse_if_someone_else_reviews)."""
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None:
            raise LeaseError(f"No lease request {request_id}.")
        if request.status not in LeaseRequest.ASSIGNABLE:
            raise LeaseError(f"This request is {request.status}; it cannot be assigned again.")
        _refuse_if_someone_else_reviews(request, actor, seen_reviewer)
        # The off-boarding rejects open requests but leaves a partial one partial (its leases released): a
        # top-up would lease a live account, and charge its month, to a partner Layers has cut off. Its row
        # lock (organization_offboard's mark takes it first, then never a request) orders a reservation
        # before the mark, where the off-boarding reports it underway, or after it, refused here.
        _refuse_if_offboarded(request)
        # A partial request is topped up with what is still to assign (every lease of the request counts,
        # one the partner has released since included: assignedCount, and the status _bind sets, count them).
        assigned = Lease.objects.filter(request=request).count()
        wanted = request.count - assigned
        if wanted <= 0:
            raise LeaseError(f"All {request.count} accounts of this request are assigned; nothing is left to assign.")
        if auto:
            # Auto-assign takes only accounts in the very language the partner asked for; one from another
            # region of it (pt-PT for pt-BR) may suit them, but that is a person's call, made by picking it.
            candidates = pool_candidates(request=request)
            chosen = _lock_best_available([c.account.pk for c in candidates if c.exact_language], wanted)
            if not chosen:
                other_region = [c for c in candidates if not c.exact_language]
                if other_region:
                    raise LeaseError(
                        f"No available pool account matches this niche in {request.language} exactly; "
                        f"{len(other_region)} match it in another region of the language: pick one by hand if "
                        "it suits the partner."
                    )
                raise LeaseError("No available pool account matches this niche.")
        else:
            chosen = list(dict.fromkeys(pool_account_ids or []))
            if not chosen:
                raise LeaseError("Pick at least one pool account (or auto-assign).")
            if len(chosen) > wanted:
                already = f", {assigned} are assigned already: {wanted} still to assign" if assigned else ""
                raise LeaseError(f"The partner asked for {request.count}{already}; {len(chosen)} were picked.")
        # Row locks in a fixed order: two staff picking the same account at the same moment serialize here,
        # and the second finds it no longer available instead of leasing it twice (auto's picks are already
        # locked by _lock_best_available and available).
        accounts = list(PoolAccount.objects.select_for_update().filter(pk__in=chosen).order_by("pk"))
        found = {a.pk: a for a in accounts}
        bound = _users_bound_in_project(request.project_id)
        for pk in chosen:
            account = found.get(pk)
            if account is None:
                raise LeaseError(f"No pool account {pk}.")
            if account.status != PoolAccount.Status.AVAILABLE:
                raise LeaseError(f"@{account.handle} is not available (it is {account.status}); pick another account.")
            if account.warmup_state != PoolAccount.Warmup.WARM:
                raise LeaseError(f"@{account.handle} is still warming up; partners get warmed accounts only.")
            if account.platform_user_id in bound:
                raise LeaseError(
                    f"@{account.handle}'s TikTok user is already connected in this project; pick another account."
                )
        PoolAccount.objects.filter(pk__in=chosen).update(status=PoolAccount.Status.RESERVED)
        request.status = LeaseRequest.Status.PROVISIONING
        request.failure_reason = ""
        request.save(update_fields=["status", "failure_reason"])
        started = _audit(
            action="assigning",
            actor=actor,
            request=request,
            pool_accounts=[found[pk].handle for pk in chosen],
            pool_account_ids=chosen,  # what lease_requests_recover_interrupted gives back if this never ends
            # The prices the accounts are assigned at (_bind): the admin's check of what the page showed reads
            # them here, and ops may reprice a reserved account while a worker checks its token.
            monthly_price_cents={pk: found[pk].monthly_price_cents for pk in chosen},
            auto=auto,
        )
        return [found[pk] for pk in chosen], started.pk


def _lock_best_available(ranked: list[str], wanted: int) -> list[str]:
    """Lock and return, best first, up to `wanted` of the `ranked` pool accounts that are still available.
    The ranking was read without locks, so another auto-assign may be reserving the same best accounts at
    this moment: rows it holds are skipped (SKIP LOCKED) and rows it has reserved meanwhile no longer match,
    so each run takes the next best free ones instead of failing on the first run's picks."""
    if not ranked:
        return []
    position = Case(*[When(pk=pk, then=Value(i)) for i, pk in enumerate(ranked)])
    return list(
        PoolAccount.objects.select_for_update(skip_locked=True)
        .filter(pk__in=ranked, status=PoolAccount.Status.AVAILABLE, warmup_state=PoolAccount.Warmup.WARM)
        .order_by(position)
        .values_list("pk", flat=True)[:wanted]
    )


def _latest_attempt(request: LeaseRequest) -> LeaseAction | None:
    """The request's most recent assignment attempt (its "assigning" audit row)."""
    return request.actions.filter(action="assigning").order_by("-created_at", "-pk").first()


def _is_current_attempt(request: LeaseRequest, attempt: int | None) -> bool:
    """Whether `request` (locked) is still provisioning for `attempt`: an assignment that stalled past the
    recovery (lease_requests_recover_interrupted) must neither bind nor fail a request that has moved on,
    maybe to another staff member's assignment of the same accounts."""
    if request.status != LeaseRequest.Status.PROVISIONING:
        return False
    latest = _latest_attempt(request)
    return attempt is None or (latest is not None and latest.pk == attempt)


def _check_tokens(accounts: list[PoolAccount]) -> tuple[list[str], list[str]]:
    """Verify each reserved account's token with TikTok (no transaction open), refreshing an expired one
    first (_verified_token). Returns the problems, and the ids of the accounts without a usable token (none,
    or refused and not refreshable): a platform outage is not their fault.

    A token TikTok refused is that account's: the check goes on, so that every dead account is retired. TikTok
    not answering (a timeout, a 5xx, a rate limit) is not: the check stops there. The request fails anyway,
    and each further check could wait out another timeout (up to ANSWER_DEADLINE_TIMEOUTS ×
    LAYERS_PLATFORM_TIMEOUT, a refresh and a second profile call included) while the request stays
    `provisioning`: 50 accounts took longer than PROVISIONING_INTERRUPTED_AFTER. The accounts not checked go
    back to the pool untouched; the problems name them."""
    problems, dead = [], []
    for position, account in enumerate(accounts):
        if not account.access_token:
            problems.append(f"@{account.handle} has no token")
            dead.append(account.pk)
            continue
        try:
            alive = _verified_token(account, status=PoolAccount.Status.RESERVED)
        except (PlatformUnavailable, RateLimited) as exc:
            problems.append(f"TikTok could not confirm @{account.handle} ({_platform_error_label(exc)})")
            rest = [f"@{a.handle}" for a in accounts[position + 1 :]]
            if rest:
                why = "TikTok asked us to wait" if isinstance(exc, RateLimited) else "TikTok did not answer"
                problems.append(
                    f"The check stopped at @{account.handle} because {why}: {len(rest)} other account(s) were "
                    f"not checked and went back to the pool ({', '.join(rest)})."
                )
            break
        except PlatformError as exc:  # refused for another reason than the token (RequestRejected)
            problems.append(f"TikTok could not confirm @{account.handle} ({_platform_error_label(exc)})")
            continue
        if not alive:
            problems.append(f"@{account.handle}'s token is no longer valid")
            dead.append(account.pk)
    return problems, dead


def _platform_error_label(exc: PlatformError) -> str:
    return f"{type(exc).__name__}: {exc.code}" if exc.code else type(exc).__name__


def _verified_token(account: PoolAccount, *, status: str) -> bool:
    """Whether the pool account's token works (a profile call). An access token that expired (a day in the
    pool is enough: TikTok's lives 24 h) is refreshed first, and one refused is refreshed once, with the
    refresh token (365 days): only a refresh TikTok refuses too means a dead account. Raises PlatformError
    when TikTok could not say (transient). `status` is the status the account must still have for a refresh
    to be stored (the caller's hold on it); `account` gets the refreshed tokens."""
    from accounts.platforms.clients import get_client

    client = get_client("tiktok")
    if _pool_token_expiring(account, within=_POOL_CALL_SKEW) or _pool_refresh_underway(account):
        # wait: a refresh of the same account underway (the beat task's, maybe claimed before an assignment
        # reserved the account) is waited for, then its token is used. Not only for an expiring token: that
        # refresh is rotating the refresh token away, and an assignment must not bind the old pair.
        if pool_account_refresh(pool_account_id=account.pk, statuses=(status,), wait=True) == "dead":
            return False
        account.refresh_from_db(fields=POOL_TOKEN_FIELDS)
    refused = account.access_token or ""
    try:
        client.get_profile(access_token=refused)
        return True
    except TokenInvalid:
        pass
    outcome = pool_account_refresh(pool_account_id=account.pk, statuses=(status,), wait=True, refused=refused)
    if outcome not in ("refreshed", "renewed"):
        return False  # refused too, no refresh token, or no longer the caller's to check
    account.refresh_from_db(fields=POOL_TOKEN_FIELDS)
    try:
        client.get_profile(access_token=account.access_token or "")
    except TokenInvalid:
        return False
    return True


def _fail(
    *,
    request_id: str,
    pool_ids: list[str],
    reason: str,
    actor,
    problems: list[str] = (),
    retire_ids=(),
    attempt: int | None = None,
) -> LeaseRequest:
    """Fail the current attempt: `reason` is what the partner reads, `problems` (staff only: the request's
    history, the admin's message) what went wrong with which account.

    A failed top-up of a `partial` request (it has leases) goes back to `partial`, without a failureReason:
    the partner's accounts stay leased, and `failed` with "nothing was leased" would tell them otherwise.
    Staff read the failure as after any attempt (failed_attempt: the admin's page and message, the command)."""
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().get(pk=request_id)
        if not _is_current_attempt(request, attempt):
            return request  # taken over or recovered meanwhile: its accounts were handed back then
        PoolAccount.objects.filter(pk__in=retire_ids, status=PoolAccount.Status.RESERVED).update(
            status=PoolAccount.Status.RETIRED, status_note=RETIRED_DEAD_AT_ASSIGNMENT
        )
        PoolAccount.objects.filter(pk__in=pool_ids, status=PoolAccount.Status.RESERVED).update(
            status=PoolAccount.Status.AVAILABLE
        )
        if Lease.objects.filter(request=request).exists():
            request.status, request.failure_reason = LeaseRequest.Status.PARTIAL, ""
        else:
            request.status = LeaseRequest.Status.FAILED
            request.failure_reason = shorten(reason, LeaseRequest.failure_reason.field.max_length)
        request.save(update_fields=["status", "failure_reason"])
        _audit(action="failed", actor=actor, request=request, reason=reason, problems=list(problems))
    return request


def failure_problems(request: LeaseRequest) -> list[str]:
    """What went wrong in the request's latest failed assignment, naming the pool accounts: for staff only
    (the admin page and message, lease_assign's error), never for the partner."""
    failed = request.actions.filter(action="failed").first()  # newest first
    return list(failed.detail.get("problems") or []) if failed else []


def failed_attempt(request: LeaseRequest) -> bool:
    """Whether the request's latest assignment attempt failed: a `failed` request, or a `partial` one whose
    top-up failed (_fail puts it back to `partial`, so its status alone does not say)."""
    latest = request.actions.filter(action__in=("assigning", "assigned", "failed")).first()  # newest first
    return latest is not None and latest.action == "failed"


def _bind(*, request_id: str, pool_ids: list[str], actor, attempt: int | None = None) -> LeaseRequest:
    from accounts.tasks import social_account_after_connect
    from billing.services import lease_billing_start
    from leasing.serializers import lease_request_data
    from scheduling.services import layers_provision_for_account

    now = timezone.now()
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().get(pk=request_id)
        if not _is_current_attempt(request, attempt):
            raise LeaseError("This assignment was interrupted and the request has moved on; nothing was bound.")
        # Reserved before the partner was off-boarded, bound after (the worker's token check was still queued):
        # live accounts, with tokens, leased and charged to a partner Layers has cut off, which nothing would
        # release until the off-boarding was run again. Read under the mark's row lock, as _reserve reads it:
        # a bind committing first is released by the off-boarding, which reads the leases after its mark.
        _refuse_if_offboarded(request)
        pool = list(PoolAccount.objects.select_for_update().filter(pk__in=pool_ids, status=PoolAccount.Status.RESERVED))
        if len(pool) != len(pool_ids):
            raise LeaseError("A reserved pool account changed state during provisioning.")
        # Billed at the price each account was reserved at (and, from the admin, shown at): a reprice while a
        # worker checked the tokens charged the partner a first month nobody chose the account at.
        started = LeaseAction.objects.filter(pk=attempt).values_list("detail", flat=True).first() if attempt else None
        reserved_prices = (started or {}).get("monthly_price_cents") or {}
        for account in pool:
            identity, _ = PlatformIdentity.objects.get_or_create(
                organization_id=request.organization_id,
                platform="tiktok",
                platform_user_id=account.platform_user_id,
                defaults={"handle": account.handle, "display_name": account.display_name},
            )
            # A pool account without a display name (a CSV import has none) keeps the one known.
            names = (account.handle, account.display_name or identity.display_name)
            if (identity.handle, identity.display_name) != names:
                # The organization leased (or connected) this TikTok user before, under the names of then: ops
                # have renamed the pool account since (its user changed handle). The partner's API read the
                # old handle while the lease, the ledger and the admin read the new one.
                identity.handle, identity.display_name = names
                identity.save(update_fields=["handle", "display_name", "updated_at"])
            # The token moves to the social account (one live copy: TikTok rotates refresh tokens), re-encrypted
            # under the first key: a key rotation running now may have passed the social accounts' columns.
            social = SocialAccount.objects.create(
                organization_id=request.organization_id,
                project_id=request.project_id,
                identity=identity,
                platform="tiktok",
                kind=SocialAccount.Kind.LEASED,
                status=SocialAccount.Status.CONNECTED,
                access_token_enc=crypto.reencrypt(account.access_token_enc),
                refresh_token_enc=crypto.reencrypt(account.refresh_token_enc),
                token_expires_at=account.token_expires_at,
                token_lifetime=account.token_lifetime,
                refresh_expires_at=account.refresh_expires_at,
                token_version=1,
                token_refreshed_at=now,
                health_checked_at=now,
                connected_at=now,
            )
            social_account_status_record(
                account=social,
                from_status="",
                source=f"lease request {request.pk} assigned "
                + (f"by {staff_source(actor)}" if actor else "automatically"),
            )
            lease = Lease.objects.create(
                organization_id=request.organization_id,
                project_id=request.project_id,
                request=request,
                pool_account=account,
                social_account=social,
                monthly_price_cents=reserved_prices.get(account.pk, account.monthly_price_cents),
                handle=account.handle,
                assigned_at=now,
                assigned_by=actor,
            )
            account.status = PoolAccount.Status.LEASED
            account.access_token_enc = account.refresh_token_enc = ""
            account.save(update_fields=["status", "access_token_enc", "refresh_token_enc"])
            layers_provision_for_account(account=social)
            # The avatar copy a connect queues (the same post-connect task: idempotent, retried, and a failure
            # never undoes the assignment). After commit, as it calls TikTok: the lease_request.assigned event
            # below is recorded before it, and the partner reads the avatar from the account's GET. A broker
            # down now is caught by the provisioning tick (social_accounts_unprovisioned).
            enqueue_on_commit(social_account_after_connect, social.pk)
            lease_billing_start(lease=lease)
            _audit(action="assigned", actor=actor, request=request, lease=lease, pool_account=account.handle)
        assigned = Lease.objects.filter(request=request).count()
        request.status = LeaseRequest.Status.ASSIGNED if assigned >= request.count else LeaseRequest.Status.PARTIAL
        request.decided_at = now
        request.save(update_fields=["status", "decided_at"])
        event_record(
            organization_id=request.organization_id, type="lease_request.assigned", data=lease_request_data(request)
        )
    return request


# A request is `provisioning` while its accounts' tokens are checked and bound: seconds, a few minutes for
# 50 accounts on a slow platform. Longer means the process doing it died, or its task was lost.
PROVISIONING_INTERRUPTED_AFTER = timedelta(minutes=15)


@dataclass(frozen=True)
class AssignmentUnderway:
    accounts: int
    started_at: datetime
    given_up_at: datetime


def assignment_underway(request: LeaseRequest) -> AssignmentUnderway | None:
    """The assignment a worker is carrying out for a `provisioning` request (lease_assign_start), for its admin
    page: how many accounts, since when, and when it is given up as interrupted. None for any other request."""
    if request.status != LeaseRequest.Status.PROVISIONING:
        return None
    started = _latest_attempt(request)
    if started is None:
        return None
    return AssignmentUnderway(
        accounts=len(started.detail.get("pool_account_ids") or started.detail.get("pool_accounts") or []),
        started_at=started.created_at,
        given_up_at=started.created_at + PROVISIONING_INTERRUPTED_AFTER,
    )


def lease_requests_recover_interrupted(*, now=None) -> int:
    """Fail the requests left `provisioning` by an assignment that never finished, and give their reserved
    pool accounts back to the pool; returns how many. Nothing else could: `provisioning` is not open, so
    staff could neither assign, reject nor take the request, and its accounts stayed reserved. Failed, the
    request is open again (the partner sees it `failed` until staff assign it)."""
    cutoff = (now or timezone.now()) - PROVISIONING_INTERRUPTED_AFTER
    recovered = 0
    for request_id in LeaseRequest.objects.filter(status=LeaseRequest.Status.PROVISIONING).values_list("pk", flat=True):
        # One request that cannot be recovered (bad history, a lock timeout) must not keep the others stuck.
        try:
            recovered += _recover_interrupted(request_id=request_id, cutoff=cutoff)
        except Exception:
            log.exception("lease request %s: could not recover the interrupted assignment", request_id)
    return recovered


def _recover_interrupted(*, request_id: str, cutoff) -> int:
    with transaction.atomic():
        request = LeaseRequest.objects.select_for_update().get(pk=request_id)
        started = _latest_attempt(request)
        if request.status != LeaseRequest.Status.PROVISIONING or (started and started.created_at > cutoff):
            return 0  # finished meanwhile, or still within its time
        pool_ids = (started.detail.get("pool_account_ids") if started else None) or []
        if started and not pool_ids:  # written before the ids were recorded: find them by handle
            pool_ids = list(
                PoolAccount.objects.filter(
                    handle__in=started.detail.get("pool_accounts", []), status=PoolAccount.Status.RESERVED
                ).values_list("pk", flat=True)
            )
        _fail(
            request_id=request.pk,
            pool_ids=pool_ids,
            reason=FAILED_INTERRUPTED,
            actor=None,
            problems=["The assignment was interrupted before it finished (a process died): assign it again."],
            attempt=started.pk if started else None,
        )
        return 1


# --- Release ----------------------------------------------------------------------------------------


def leases_release(*, lease_ids: list, actor=None) -> BatchOutcome:
    """Staff release many leases (the admin's "Release selected leases" past what its request releases: a worker
    does the rest): each as the admin releases one, by revoking its leased account (social_account_revoke: its
    own transaction), the queued posts canceled, no refund. A lease released already, or by someone else before
    this one reached it, is left alone and not counted as this staff member's."""
    from accounts.services import social_account_revoke

    outcome = BatchOutcome()
    leases = dict(Lease.objects.filter(pk__in=lease_ids).values_list("pk", "social_account_id"))
    for pk in lease_ids:
        if pk not in leases:
            outcome.skipped[pk] = Conflict("No such lease.", code="LEASE_NOT_FOUND")
            continue
        result = social_account_revoke(account_id=leases[pk], actor=actor)
        if not result.released:
            outcome.skipped[pk] = Conflict("Released already.", code="LEASE_RELEASED")
            continue
        outcome.done.append(pk)
        outcome.notes[pk] = f"{result.canceled_scheduled_posts} queued post(s) canceled"
    return outcome


def lease_release_for_account(*, account: SocialAccount, actor=None, api_key=None) -> Lease | None:
    """Release the live lease bound to `account`, inside the caller's (revoke) transaction: the pool
    account gets its token back and returns to the pool, no further period is charged (billing renews
    only live leases), the current one is not refunded. Returns the released lease, or None. The history
    names who released it: `actor` (staff), or `api_key` (the partner's key, when their API call did).

    A binding released `reauth_required` (its token invalidated at TikTok, its refresh refused, or a grant
    without the publishing permission) retires the pool account instead (RETIRED_REAUTH_AT_RELEASE: "Connect
    on TikTok" cures it), and the release's history row says so. The check after a release cannot be left to
    find it: a token lacking video.publish still reads the profile, and a TikTok 5xx during the check leaves
    the account available (nothing runs it again), for the next partner to lease, be charged and fail to
    post with."""
    if account.kind != SocialAccount.Kind.LEASED:
        return None
    from billing.services import lease_release_lock, lease_release_time

    lease_release_lock(organization_id=account.organization_id)  # wallet first, as the renewal job locks
    lease = Lease.objects.select_for_update().filter(social_account=account, released_at__isnull=True).first()
    if lease is None:
        return None
    # The binding's status as stored: the revoke holds its row lock and sets it `disconnected` in memory only
    # (it saves after releasing), so this is what the status was when the partner or staff released it, and
    # nothing (a reconnect, the health check) can change it until the release commits.
    was, reauth_reason = (
        SocialAccount.objects.select_for_update(of=("self",))
        .filter(pk=account.pk)
        .values_list("status", "reauth_reason")
        .get()
    )
    needs_reauth = was == SocialAccount.Status.REAUTH_REQUIRED
    # To the millisecond, as `releasedAt` is written: billing owes a month that started before the release
    # (start < released_at), and a release 0.6 ms into a month read as made at its very start, which owes it
    # not, while it was charged. After any month already charged (lease_release_time): the renewal job may
    # have charged one in this very millisecond.
    now = lease_release_time(lease_id=lease.pk, now=timezone.now())
    lease.released_at = now
    lease.released_by = actor
    lease.save(update_fields=["released_at", "released_by"])
    retired = Q(status=PoolAccount.Status.RETIRED)
    if needs_reauth:
        status, note = PoolAccount.Status.RETIRED, RETIRED_REAUTH_AT_RELEASE
    else:
        status, note = PoolAccount.Status.AVAILABLE, ""
    pool = PoolAccount.objects.filter(pk=lease.pool_account_id)
    pool.update(
        # Back to the pool (out of it, when it needs a reauth), unless ops retired it meanwhile (its note says
        # why): it then stays out, with their note.
        status=Case(When(retired, then=F("status")), default=Value(status)),
        status_note=Case(When(retired, then=F("status_note")), default=Value(note)),
        # Re-encrypted under the first key, as at assignment (crypto.reencrypt: a key rotation may be running).
        access_token_enc=crypto.reencrypt(account.access_token_enc),
        refresh_token_enc=crypto.reencrypt(account.refresh_token_enc),
        token_expires_at=account.token_expires_at,
        token_lifetime=account.token_lifetime,
        refresh_expires_at=account.refresh_expires_at,
    )
    detail = {}
    if needs_reauth:
        # Why it is out of the pool, where ops look first: the lease's history (and what TikTok said).
        status, note = pool.values_list("status", "status_note").get()
        detail = {"pool_account": f"{status}: {note}", "reauth_reason": reauth_reason}
    _audit(action="released", actor=actor, api_key=api_key, request=lease.request, lease=lease, **detail)
    # The period the release fell in is owed even if the renewal job has not reached it yet: settle it now,
    # after commit (charging takes the wallet's lock, and the job takes it before the lease's: inside this
    # transaction, which holds the lease's, the two could deadlock). Should that fail, the job settles it.
    transaction.on_commit(lambda: _settle_released(lease.pk))
    if needs_reauth:
        return lease  # out of the pool already: nothing for the check to decide
    from leasing.tasks import pool_account_check

    # Never raises: with the broker down the release stands and the account is available; its token is then
    # verified when it is next assigned (_check_tokens), before anything is bound to it.
    enqueue_on_commit(pool_account_check, lease.pool_account_id)
    return lease


# The columns pool_account_set_tokens writes.
POOL_TOKEN_FIELDS = [
    "access_token_enc",
    "refresh_token_enc",
    "token_expires_at",
    "token_lifetime",
    "refresh_expires_at",
]


def pool_account_set_tokens(account: PoolAccount, tokens: TokenSet) -> None:
    """Write a token set onto a pool account (the caller saves). Access and refresh token always together:
    TikTok rotates refresh tokens, so an old one kept beside a new access token would be dead."""
    account.access_token_enc = crypto.encrypt(tokens.access_token)
    account.refresh_token_enc = crypto.encrypt(tokens.refresh_token) if tokens.refresh_token else ""
    account.token_expires_at = tokens.expires_at
    account.token_lifetime = tokens.lifetime
    account.refresh_expires_at = tokens.refresh_expires_at


# How many times pool_account_take_refreshed_tokens looks again for the pool account's live lease when an
# assignment or a release committed between its read and its locks. Each such look follows a commit it waited
# for, so a second is nearly always enough; more would mean staff leasing and releasing the account over and
# over within milliseconds.
HANDOFF_TRIES = 3


class _LiveLeaseMoved(Exception):
    """The pool account's live lease changed between the handoff's read and its locks."""


def pool_account_take_refreshed_tokens(*, social_account_id: str, refreshed_from: str | None, tokens) -> bool:
    """A token refresh of a leased account that finished after the lease was released: the pool account got
    the tokens the refresh started from, which TikTok has since rotated away. The new ones go to whoever now
    holds those: the pool account, or, when it was leased again meanwhile, the live binding the assignment
    moved them to. Nothing else replaced them meanwhile, then. Returns whether they went.

    That binding is connected, or reauth_required because the dead pair was refused before this landed (its
    own refresh: invalid_grant): the pair is what it lacked, so it is connected again, as a staff reconnect
    does (accounts.services.social_account_reconnect), provided the grant still has both publishing scopes
    (a pool account is only connected with them).

    Locks as a release does: the live binding first, then the pool account (the other order could deadlock
    with a release of that lease). Which binding that is can only be read before taking its lock, and an
    assignment holds the pool account's lock for its whole transaction: a read made while it is still
    uncommitted sees no lease, and the pool account, once its lock comes, holds no token any more. So the live
    lease is read again under both locks (nothing can lease or release the account while its row is held):
    changed, the savepoint is rolled back, which frees the locks taken in it, and the handoff starts again
    (HANDOFF_TRIES). The caller holds the released binding's row lock."""
    lease = _released_lease(social_account_id)
    if lease is None or not refreshed_from:
        return False
    for _ in range(HANDOFF_TRIES):
        try:
            with transaction.atomic():  # a savepoint: rolled back, it lets go of the locks taken in it
                return _hand_refreshed_tokens(
                    pool_account_id=lease.pool_account_id,
                    released=social_account_id,
                    refreshed_from=refreshed_from,
                    tokens=tokens,
                )
        except _LiveLeaseMoved:
            continue
    log.warning(
        "tokens refreshed for %s after its release: pool account %s kept changing hands; the new pair is dropped",
        social_account_id,
        lease.pool_account_id,
    )
    return False


def _live_binding_id(pool_account_id: str) -> str | None:
    return (
        Lease.objects.filter(pool_account_id=pool_account_id, released_at__isnull=True)
        .values_list("social_account_id", flat=True)
        .first()
    )


def _hand_refreshed_tokens(*, pool_account_id: str, released: str, refreshed_from: str, tokens) -> bool:
    # An assignment between the release and this write (`lease_assign --auto` picks the account just released)
    # moved the old pair onto its new binding and blanked the pool's copy. TikTok has killed that refresh token:
    # without the new pair the binding's first refresh is refused, and the partner, charged for the month,
    # cannot reauthorize a leased account. The binding holds the grant now, so the pair is its.
    live = _live_binding_id(pool_account_id)
    binding = (
        SocialAccount.objects.select_for_update(of=("self",)).select_related("identity").filter(pk=live).first()
        if live
        else None
    )
    pool = PoolAccount.objects.select_for_update().get(pk=pool_account_id)
    if _live_binding_id(pool_account_id) != live:
        raise _LiveLeaseMoved
    if binding is not None:
        # Compared decrypted: each encryption of a token differs (Fernet), and a key rotation re-encrypts it.
        if binding.refresh_token != refreshed_from:
            return False
        if binding.status == SocialAccount.Status.CONNECTED:
            store_tokens(binding, tokens)  # a new token_version: a refresh of it still using the old pair loses
            binding.save()
            return True
        if binding.status != SocialAccount.Status.REAUTH_REQUIRED or publishing_scopes_missing("tiktok", tokens.scopes):
            return False
        if social_account_removed_by_the_creator(account_id=binding.pk):
            # Not the dead pair's refusal: the creator removed the app, and TikTok revoked this pair as well.
            return False
        social_account_reconnect(
            account=binding,
            tokens=tokens,
            profile=None,
            source=f"token refresh of the previous lease ({released}), finished after its release",
        )
        return True
    if pool.refresh_token != refreshed_from:
        return False
    pool_account_set_tokens(pool, tokens)
    pool.save(update_fields=POOL_TOKEN_FIELDS)
    return True


def pool_holds_platform_user(*, platform: str, platform_user_id: str) -> bool:
    """Whether Layers' pool still needs this platform user's grant: a pool account of theirs that holds a
    token, or is reserved or leased (a leased one's token is on its binding). Only a retired account without a
    token has no use for it. Revoking a connected account of the same user must then keep the grant."""
    return _pool_holders(platform=platform, platform_user_id=platform_user_id).exists()


def pool_token_of_platform_user(*, platform: str, platform_user_id: str) -> str | None:
    """The unexpired access token Layers' pool holds for this platform user (None if it holds none: not a pool
    account, or leased, its token then on the lease's binding): what can still ask TikTok how a post made
    before a revoke or a release ended (accounts.services.platform_user_token_kept)."""
    account = (
        _pool_holders(platform=platform, platform_user_id=platform_user_id)
        .exclude(access_token_enc="")
        .filter(Q(token_expires_at__isnull=True) | Q(token_expires_at__gt=timezone.now()))
        .first()
    )
    return account.access_token if account else None


def pool_renews_token_of_platform_user(*, platform: str, platform_user_id: str) -> bool:
    """Whether Layers' pool holds a token of this platform user that it keeps renewing: an account waiting for a
    lease (the pool refresh tick) or being assigned (its check refreshes an expired token before binding it),
    with a refresh token. A retired account's token is never refreshed, and a leased one's is on its binding
    (accounts.services.platform_user_token_renewing)."""
    return (
        _pool_holders(platform=platform, platform_user_id=platform_user_id)
        .filter(status__in=(PoolAccount.Status.AVAILABLE, PoolAccount.Status.RESERVED))
        .exclude(refresh_token_enc="")
        .exists()
    )


def _pool_holders(*, platform: str, platform_user_id: str):
    return PoolAccount.objects.filter(platform=platform, platform_user_id=platform_user_id).exclude(
        status=PoolAccount.Status.RETIRED, access_token_enc=""
    )


def _released_lease(social_account_id: str) -> Lease | None:
    return (
        Lease.objects.filter(social_account_id=social_account_id)
        .exclude(released_at=None)
        .select_related("pool_account")
        .first()
    )


def _settle_released(lease_id: int) -> None:
    from billing.services import lease_paid_through

    try:
        lease_paid_through(lease=Lease.objects.get(pk=lease_id))
    except Exception:  # noqa: BLE001 - the release is committed; the renewal job charges what is left
        log.warning("settling released lease %s failed; the renewal job will charge it", lease_id, exc_info=True)


def pool_account_check(*, pool_account_id: str) -> str:
    """Verify a returned pool account's token (refreshing an expired one: _verified_token); a dead one takes
    the account out of the pool (retired, with a note for ops) instead of leasing a broken account to the
    next partner. Raises PlatformError when TikTok could not say (the task logs it and does not retry: the
    next assignment checks the token again)."""
    account = PoolAccount.objects.filter(pk=pool_account_id).first()
    if account is None or account.status != PoolAccount.Status.AVAILABLE:
        return "skipped"  # None: a message sent by hand, from another environment, or left after a restore
    if not _verified_token(account, status=PoolAccount.Status.AVAILABLE):
        with transaction.atomic():
            retired = PoolAccount.objects.filter(pk=account.pk, status=PoolAccount.Status.AVAILABLE).update(
                status=PoolAccount.Status.RETIRED, status_note=RETIRED_DEAD_AFTER_RELEASE
            )
            # In the history of the lease it came back from, where ops look first (a reconnect clears the
            # pool account's note, and that note was the only trace of why it left the pool).
            lease = Lease.objects.filter(pool_account_id=account.pk, released_at__isnull=False).order_by("-released_at")
            if retired and (lease := lease.select_related("request").first()) is not None:
                _audit(
                    action="retired",
                    request=lease.request,
                    lease=lease,
                    pool_account=account.handle,
                    reason=RETIRED_DEAD_AFTER_RELEASE,
                )
        return "retired"
    return "ok"


# --- Pool token refresh ----------------------------------------------------------------------------------
# Pool accounts wait for a lease for days or months; their TikTok access token lives 24 h, their refresh
# token 365 d and TikTok rotates it on every refresh. The beat task `pool-accounts-token-refresh` refreshes
# the tokens of pool accounts not leased (a leased one's token is on its social account, which the accounts
# health check refreshes) POOL_REFRESH_MARGIN before the access token expires (a third of the token's
# lifetime when that is shorter: TikTok's may live 2 h; accounts/token_margin.py), so the refresh token keeps
# rotating and never lapses; assignment and the check after a release refresh an expired one themselves.
POOL_REFRESH_MARGIN = timedelta(hours=6)
_POOL_CALL_SKEW = timedelta(minutes=5)


def _pool_token_expiring(account: PoolAccount, *, within: timedelta, now=None) -> bool:
    due = refresh_due(
        expires_at=account.token_expires_at,
        lifetime=account.token_lifetime,
        configured=within,
        now=now or timezone.now(),
    )
    return bool(account.refresh_token_enc) and due


POOL_REFRESH_CLAIM_SPARE = timedelta(seconds=10)
# How often a caller that waits for someone else's refresh (`wait`) looks at the row again.
POOL_REFRESH_POLL_SECONDS = 0.25


def _pool_refresh_claim_lease() -> timedelta:
    """How long a pool refresh claim holds: the refresh call's own deadline (accounts/platforms/http:
    platform_request ends it, answer and all, within ANSWER_DEADLINE_TIMEOUTS × LAYERS_PLATFORM_TIMEOUT) and
    POOL_REFRESH_CLAIM_SPARE for the database around it. A holder still waiting on TikTok never loses its
    claim; one whose process died leaves it to expire, and the account is refreshed by the next caller."""
    call = timedelta(seconds=ANSWER_DEADLINE_TIMEOUTS * settings.LAYERS_PLATFORM_TIMEOUT)
    return call + POOL_REFRESH_CLAIM_SPARE


def _pool_refresh_underway(account: PoolAccount, *, now=None) -> bool:
    """Whether someone holds the account's refresh claim (as `account` was read)."""
    until = account.refresh_claimed_until
    return until is not None and until > (now or timezone.now())


@dataclass(frozen=True)
class _PoolRefreshClaim:
    pool: PoolAccount  # as read when claimed
    until: datetime  # the claim's value: released only while it is still this one


def _pool_refresh_claim(
    *, pool_account_id: str, statuses, refused: str | None
) -> tuple[str | None, "_PoolRefreshClaim | None"]:
    """One short transaction: decide whether the account needs this refresh and, if so, claim it. Returns
    (outcome, None) when the caller is done (pool_account_refresh's "skipped" or "renewed"), (None, claim)
    when the claim is the caller's, and (None, None) when another refresh holds it."""
    with transaction.atomic():
        pool = PoolAccount.objects.select_for_update().filter(pk=pool_account_id, status__in=statuses).first()
        if pool is None or not pool.refresh_token:
            return "skipped", None
        if refused is not None and pool.access_token != refused:
            return "renewed", None
        now = timezone.now()
        # Before the expiry test: a waiting caller decides on the row that refresh leaves behind.
        if _pool_refresh_underway(pool, now=now):
            return None, None
        if refused is None and not _pool_token_expiring(pool, within=POOL_REFRESH_MARGIN, now=now):
            return "skipped", None
        pool.refresh_claimed_until = now + _pool_refresh_claim_lease()
        pool.save(update_fields=["refresh_claimed_until"])
    return None, _PoolRefreshClaim(pool=pool, until=pool.refresh_claimed_until)


def _pool_refresh_release(claim: _PoolRefreshClaim) -> None:
    # Only while it is still ours: past its lease another caller may have taken it over.
    PoolAccount.objects.filter(pk=claim.pool.pk, refresh_claimed_until=claim.until).update(refresh_claimed_until=None)


def pool_account_refresh(
    *, pool_account_id: str, statuses=(PoolAccount.Status.AVAILABLE,), wait: bool = False, refused: str | None = None
) -> str:
    """Refresh a pool account's TikTok tokens and store the new pair (pool_account_set_tokens). Returns
    "refreshed"; "dead" when TikTok refused the refresh token (invalid_grant: the grant was removed, or the
    refresh token lapsed); "skipped" when the account is no longer in one of `statuses`, has no refresh
    token, is not within POOL_REFRESH_MARGIN of expiry, or (without `wait`) another refresh is underway;
    "renewed" when the account holds newer tokens than the ones this call was about (use those): with
    `refused` (an access token a call was refused with), which it refreshes whatever the expiry, once the
    account holds another access token; or when a staff connect stored a new pair during the refresh call.
    Raises the transient PlatformError (nothing changed), or PlatformUnavailable when, with `wait`, someone
    else's refresh was still underway after a whole claim lease. It does not retire: the caller knows why it
    asked.

    One refresh at a time per account: TikTok rotates the refresh token, and a second refresh sending the
    same one would be refused and read as a dead account. A short transaction claims the account
    (refresh_claimed_until, for _pool_refresh_claim_lease); the call to TikTok is made with no transaction
    open (DESIGN.md: a slow answer must not keep the row locked against staff edits and connects, nor a
    database connection idle in a transaction); the new pair is then stored only if the account still holds
    the refresh token the call was made with, and the claim is released. A concurrent refresh skips or, with
    `wait`, looks at the row every POOL_REFRESH_POLL_SECONDS until the claim is released or expires (at most
    one lease), and then decides on the fresh row: it finds the token refreshed instead of sending the same
    refresh token again. A claim whose holder died expires and is taken over."""
    from accounts.platforms.clients import get_client

    give_up = monotonic() + _pool_refresh_claim_lease().total_seconds()
    while True:
        outcome, claim = _pool_refresh_claim(pool_account_id=pool_account_id, statuses=statuses, refused=refused)
        if outcome is not None:
            return outcome
        if claim is not None:
            break
        if not wait:
            return "skipped"
        if monotonic() >= give_up:
            raise PlatformUnavailable(
                "tiktok: another refresh of this pool account is still underway", code="refresh_underway"
            )
        sleep(POOL_REFRESH_POLL_SECONDS)

    pool = claim.pool
    # The refresh token itself, never its stored form: a key rotation (rotate_token_keys) re-encrypts the same
    # token meanwhile, and a ciphertext comparison would read that as a newer token and drop the new pair.
    started_from = pool.refresh_token
    before = TokenSet(
        access_token=pool.access_token or "",
        refresh_token=pool.refresh_token,
        expires_at=pool.token_expires_at or timezone.now(),
        refresh_expires_at=pool.refresh_expires_at,
        platform_user_id=pool.platform_user_id,
    )
    try:
        tokens = get_client("tiktok").refresh(tokens=before)
    except TokenInvalid:
        _pool_refresh_release(claim)
        # Refused: dead, unless a staff connect gave the account another refresh token meanwhile.
        return "dead" if _pool_holds_refresh_token(pool.pk, started_from) else "renewed"
    except BaseException:
        _pool_refresh_release(claim)  # transient (or a crash): nothing changed, the next caller tries again
        raise
    pool_account_set_tokens(pool, tokens)

    def store() -> str:
        with transaction.atomic():
            # Whatever its status now: TikTok has rotated the refresh token it held, only the new pair works (an
            # assignment that reserved it meanwhile waits for this claim before binding it: _verified_token).
            # Compared decrypted under the row lock, so nothing replaces the token between the test and the write.
            stored = _pool_holds_refresh_token(pool.pk, started_from, lock=True)
            if stored:
                PoolAccount.objects.filter(pk=pool.pk).update(
                    **{field: getattr(pool, field) for field in POOL_TOKEN_FIELDS}
                )
            _pool_refresh_release(claim)
        return "refreshed" if stored else "renewed"

    def landed() -> bool:
        held = PoolAccount.objects.filter(pk=pool.pk).values_list("access_token_enc", flat=True).first()
        return held is not None and crypto.decrypt(held) == tokens.access_token

    # The new pair is the only live one: a connection dropped during the call to TikTok must not lose it, or
    # the next refresh is refused and the account retired. The first write committed if the row holds the
    # access token TikTok has just issued (decrypted: a key rotation may have re-encrypted it since).
    return write_again_after_a_dropped_connection(
        store,
        landed=landed,
        landed_result="refreshed",
        what=f"storing the refreshed tokens of pool account {pool.pk}",
    )


def _pool_holds_refresh_token(pool_account_id: str, refresh_token: str | None, *, lock: bool = False) -> bool:
    """Whether the pool account still holds `refresh_token`, compared decrypted (its stored form changes with
    each key rotation); `lock` takes the row lock, inside the caller's transaction."""
    rows = PoolAccount.objects.select_for_update() if lock else PoolAccount.objects
    held = rows.filter(pk=pool_account_id).values_list("refresh_token_enc", flat=True).first()
    return held is not None and bool(refresh_token) and crypto.decrypt(held) == refresh_token


def pool_account_refresh_due(*, pool_account_id: str) -> str:
    """The beat task's refresh of one pool account (idempotent: a refreshed account is no longer due): a
    refresh token TikTok refuses retires the account, with a note (reconnecting it cures that). A transient
    error is re-raised; when TikTok said how long to wait (Retry-After), the refresh tick leaves the account
    out until then (refresh_not_before)."""
    try:
        outcome = pool_account_refresh(pool_account_id=pool_account_id)
    except PlatformError as exc:
        if exc.retry_after:
            # The task does not wait longer than a retry may spend in the broker (config/queueing.
            # platform_retry_countdown): a longer wait is the tick's, and it reads it from here.
            PoolAccount.objects.filter(pk=pool_account_id).update(
                refresh_not_before=timezone.now() + timedelta(seconds=exc.retry_after)
            )
        raise
    if outcome == "dead":
        PoolAccount.objects.filter(pk=pool_account_id, status=PoolAccount.Status.AVAILABLE).update(
            status=PoolAccount.Status.RETIRED, status_note=RETIRED_DEAD_AT_REFRESH
        )
        return "retired"
    return outcome


def pool_accounts_due_for_refresh(*, now=None, limit: int = 1000) -> list[str]:
    """Ids of available pool accounts (warm or still warming) whose access token expires within
    POOL_REFRESH_MARGIN (or a third of its lifetime: accounts/token_margin.py) and that hold a refresh token,
    soonest first, leaving out those TikTok told us to wait for (refresh_not_before)."""
    now = now or timezone.now()
    return list(
        PoolAccount.objects.filter(status=PoolAccount.Status.AVAILABLE)
        .exclude(refresh_token_enc="")
        .filter(Q(token_expires_at__isnull=True) | refresh_due_q(configured=POOL_REFRESH_MARGIN, now=now))
        .filter(Q(refresh_not_before__isnull=True) | Q(refresh_not_before__lte=now))
        .order_by(F("token_expires_at").asc(nulls_first=True))
        .values_list("pk", flat=True)[:limit]
    )


def pool_accounts_refresh_due(*, now=None) -> QuerySet:
    """Pool accounts holding their TikTok token (available, or reserved for an assignment, which refreshes an
    expiring one) whose refresh comes by `now` as the rows say (POOL_REFRESH_MARGIN, an unknown expiry at once),
    whatever TikTok's last Retry-After. After a restore from a backup taken at T, those were likely refreshed
    between T and the outage: their restored refresh token is dead (manage.py hold_after_restore lists them),
    and the pool refresh retires them (RETIRED_DEAD_AT_REFRESH) until staff connect them again."""
    now = now or timezone.now()
    return (
        PoolAccount.objects.filter(status__in=(PoolAccount.Status.AVAILABLE, PoolAccount.Status.RESERVED))
        .exclude(refresh_token_enc="")
        .filter(Q(token_expires_at__isnull=True) | refresh_due_q(configured=POOL_REFRESH_MARGIN, now=now))
    )


# --- Pool ---------------------------------------------------------------------------------------------


class PoolConnectRefused(Exception):
    """A staff connect of a pool account that cannot be applied; nothing was changed. `code` is the OAuth
    session's error code, `message` what staff read on the pool account's page."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class PoolConnected:
    pool_account: PoolAccount
    social_account: SocialAccount | None  # the live leased binding that got the token, if leased
    message: str


def pool_account_connect_start(*, pool_account: PoolAccount, actor, return_url: str):
    """Staff start connecting a pool account on TikTok (the admin's "Connect on TikTok"): an OAuth session
    of purpose `pool` and TikTok's authorize URL for the staff member's browser (accounts.services.
    oauth_pool_session_start). Refused while the account is being assigned (reserved): its token is being
    checked and bound at this moment."""
    from accounts.services import oauth_pool_session_start

    if pool_account.status == PoolAccount.Status.RESERVED:
        raise LeaseError(
            f"@{pool_account.handle} is being assigned to a request right now; connect it once that is done."
        )
    return oauth_pool_session_start(pool_account=pool_account, staff_user=actor, return_url=return_url)


def pool_account_connect(*, pool_account_id: str, tokens: TokenSet, profile, actor=None) -> PoolConnected:
    """Complete a staff connect (the OAuth callback, inside its transaction): the consenting TikTok user's
    fresh tokens go where the pool account's live token lives.

    - Not leased: onto the pool account. An account retired for its token (TOKEN_RETIREMENTS: imported
      without tokens in live mode, dead at assignment or after a release) becomes available; one retired by
      hand stays retired, with its note.
    - Leased: onto the live leased social account, as a partner's reauth does (accounts.services.
      social_account_reconnect: same id, connected, `social_account.reconnected`); the pool account holds no
      copy (TikTok rotates refresh tokens: one live copy).
    The platform user id, handle and display name are taken from the profile where the pool account does not
    know them yet. Raises PoolConnectRefused, having changed nothing, when the consenting user is not the
    account's (account_mismatch: another user, or one already in the pool as another account) or the account
    is being assigned or changed state meanwhile.

    Locks as a release does (accounts.services.social_account_revoke): the leased binding first, then the pool
    account; the other order could deadlock with a release of the same lease."""
    live = Lease.objects.filter(pool_account_id=pool_account_id, released_at__isnull=True).first()
    binding = None
    if live is not None:
        binding = (
            SocialAccount.objects.select_for_update(of=("self",))
            .select_related("identity")
            .get(pk=live.social_account_id)
        )
    pool = PoolAccount.objects.select_for_update().filter(pk=pool_account_id).first()
    if pool is None:
        raise PoolConnectRefused("platform_error", "This pool account no longer exists.")
    consented = f"@{profile.username}" if profile.username else "The TikTok user who consented"
    pending = pool.platform_user_id.startswith(PENDING_USER_PREFIX)
    if not pending and pool.platform_user_id != tokens.platform_user_id:
        raise PoolConnectRefused(
            "account_mismatch",
            f"account_mismatch: {consented} is another TikTok user than @{pool.handle}; nothing was changed. "
            f"Sign in to TikTok as @{pool.handle} and connect again.",
        )
    if pending:
        other = (
            PoolAccount.objects.filter(platform=pool.platform, platform_user_id=tokens.platform_user_id)
            .exclude(pk=pool.pk)
            .first()
        )
        if other is not None:
            raise PoolConnectRefused(
                "account_mismatch",
                f"account_mismatch: {consented} is already in the pool as @{other.handle}; nothing was changed.",
            )
    if pool.status == PoolAccount.Status.RESERVED:
        raise PoolConnectRefused(
            "platform_error", f"@{pool.handle} is being assigned right now; nothing was changed. Connect it again."
        )
    still_live = Lease.objects.filter(pool_account=pool, released_at__isnull=True).values_list(
        "social_account_id", flat=True
    )
    if (pool.status == PoolAccount.Status.LEASED) != (binding is not None) or list(still_live) != (
        [binding.pk] if binding else []
    ):
        raise PoolConnectRefused(
            "platform_error", f"@{pool.handle} was leased or released meanwhile; nothing was changed. Connect again."
        )

    if pending:
        pool.platform_user_id = tokens.platform_user_id
    pool.handle = pool.handle or shorten(profile.username or "", PoolAccount.handle.field.max_length, mark="")
    pool.display_name = pool.display_name or shorten(
        profile.display_name or "", PoolAccount.display_name.field.max_length
    )
    fields = ["platform_user_id", "handle", "display_name"]
    consented = f"@{profile.username or pool.handle}"
    if binding is not None:
        social_account_reconnect(
            account=binding, tokens=tokens, profile=profile, source=f"reconnect by {staff_source(actor)}"
        )
        message = (
            f"Connected on TikTok as {consented}: the leased account {binding.pk} is connected again with the new "
            "token; the partner's posts publish with it."
        )
    else:
        pool_account_set_tokens(pool, tokens)
        fields += POOL_TOKEN_FIELDS
        message = f"Connected on TikTok as {consented}."
        if pool.status == PoolAccount.Status.RETIRED and pool.status_note in TOKEN_RETIREMENTS:
            pool.status, pool.status_note = PoolAccount.Status.AVAILABLE, ""
            fields += ["status", "status_note"]
            message += " It is available for leasing."
        elif pool.status == PoolAccount.Status.RETIRED:
            note = pool.status_note or "retired by hand"
            message += f" It is still retired ({note}): make it available if it may be leased."
    pool.save(update_fields=fields)
    _audit(
        action="reconnected" if binding is not None else "connected",
        actor=actor,
        request=live.request if live else None,
        lease=live,
        pool_account=pool.handle,
        platform_user=consented,
    )
    return PoolConnected(pool_account=pool, social_account=binding, message=message)


def pool_account_add(
    *,
    handle: str,
    tokens: TokenSet,
    vertical: str,
    languages: list[str],
    geos: list[str],
    monthly_price_cents: int,
    display_name: str = "",
    audience_notes: str = "",
) -> PoolAccount:
    """Add a warmed account (with its TikTok tokens) to the pool."""
    account = PoolAccount(
        handle=handle,
        platform_user_id=tokens.platform_user_id,
        display_name=display_name,
        vertical=vertical,
        languages=languages,
        geos=[g.upper() for g in geos],
        audience_notes=audience_notes,
        monthly_price_cents=monthly_price_cents,
    )
    pool_account_set_tokens(account, tokens)
    try:
        with transaction.atomic():
            account.save(force_insert=True)
            return account
    except IntegrityError:
        raise LeaseError(f"@{handle} is already in the pool.")


def sandbox_tokens_for(handle: str) -> TokenSet:
    """Sandbox mode only: tokens for a sandbox TikTok handle, as TikTok issues them after its owner
    consented (used to stock the pool in dev, demos and tests)."""
    from django.conf import settings

    from accounts.platforms.sandbox import identities, oauth

    if settings.LAYERS_PLATFORMS != "sandbox":
        raise LeaseError("Sandbox tokens exist only in sandbox mode; connect real accounts in live mode.")
    access, refresh = oauth.issue_tiktok_pair(
        username=handle, scopes="user.info.basic,user.info.profile,video.publish,video.upload,video.list"
    )
    return TokenSet(
        access_token=access.raw,
        refresh_token=refresh.raw,
        expires_at=access.token.expires_at,
        refresh_expires_at=refresh.token.expires_at,
        platform_user_id=identities.tiktok_open_id(handle),
        lifetime=access.token.expires_at - access.token.issued_at,
    )
