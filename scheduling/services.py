"""State changes of scheduling: layers, content containers, schedules, the dispatcher and publisher,
metrics sync. The database is the source of truth: Celery messages only carry post ids, and every step
here is safe to run twice or concurrently."""

import contextlib
import copy
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Now, RowNumber
from django.utils import timezone

from accounts.models import Organization, Platform, SocialAccount
from accounts.platforms.base import (
    MediaItem,
    PermissionMissing,
    PlatformError,
    PlatformUnavailable,
    PublishResult,
    PublishStatus,
    RateLimited,
    RequestRejected,
    TokenInvalid,
    refused_for_the_account,
)
from accounts.platforms.decoding import json_loads
from accounts.platforms.fields import INT64_MAX
from accounts.platforms.scopes import PUBLISHING, grant_lacks_mode, scope_for_mode, stored_scopes
from accounts.services import (
    api_key_source,
    event_record,
    platform_user_token_kept,
    platform_user_token_renewing,
    refusal_reason,
    social_account_hold_sync,
    social_account_mark_reauth_required,
    social_account_token_rejected,
    social_account_with_fresh_token,
    staff_source,
)
from config import clock
from config.api.errors import Conflict, Validation
from config.api.fields import datetime_output
from config.batches import BatchOutcome
from config.dbreconnect import write_again_after_a_dropped_connection
from config.marks import attempts_mark, recorded_since
from config.text import shorten
from scheduling.models import (
    ONBOARDING_TEMPLATE,
    CancelReason,
    ContentContainer,
    Layer,
    LayerKind,
    LayerTemplate,
    ManagedProvider,
    ScheduledPost,
    ScheduledPostAttempt,
)
from scheduling.serializers import scheduled_post_data

log = logging.getLogger(__name__)

# --- Layers -----------------------------------------------------------------------------------------

ACCOUNT_LAYER_KINDS = (
    LayerKind.ACCOUNT_HEALTH_MONITOR,
    LayerKind.SOCIAL_DISTRIBUTION,
    LayerKind.SOCIAL_ENGAGEMENT,
    LayerKind.ACCOUNT_WARMUP,
)


BUILT_IN_ACCOUNT_LAYERS = tuple({"kind": k.value, "name": k.label} for k in ACCOUNT_LAYER_KINDS)


def _onboarding_template() -> LayerTemplate:
    template, _ = LayerTemplate.objects.get_or_create(
        name=ONBOARDING_TEMPLATE, defaults={"layers": list(BUILT_IN_ACCOUNT_LAYERS)}
    )
    return template


def onboarding_layers_valid(layers) -> bool:
    """Whether `layers` can be an onboarding template's: one {"kind", "name"} per account layer kind, each
    kind exactly once, each name non-empty and fitting a layer's name."""
    name_length = Layer._meta.get_field("name").max_length
    return (
        isinstance(layers, list)
        and all(isinstance(spec, dict) for spec in layers)
        and sorted(str(spec.get("kind")) for spec in layers) == sorted(k.value for k in ACCOUNT_LAYER_KINDS)
        and all(isinstance(spec.get("name"), str) and 0 < len(spec["name"].strip()) <= name_length for spec in layers)
    )


def _onboarding_layers(template: LayerTemplate) -> list[dict]:
    """The layers an account is given: the template's, or the built-in four if the stored template is not a
    valid one. The admin edits no template (scheduling/admin.py), but a row saved there before it stopped, or
    written by hand, may be anything; followed as it is, it failed every lease assignment and every connect's
    layers step (a bare string for a spec), or gave accounts fewer than the four layers that the metrics sync
    and publishing need (ACCOUNT_LAYER_KINDS, counted by account_has_layers), with nothing to show for it."""
    if onboarding_layers_valid(template.layers):
        return template.layers
    log.warning(
        "the %r layer template is not one {kind, name} per account layer kind; provisioning the built-in "
        "layers instead",
        template.name,
    )
    return list(BUILT_IN_ACCOUNT_LAYERS)


def layers_provision_for_account(*, account) -> list[Layer]:
    """Attach the onboarding template's layers to `account`. Idempotent: existing layers are kept, missing
    ones are created (a unique constraint per account and kind makes a duplicate impossible, even when two
    workers provision at once)."""
    template = _onboarding_template()
    existing = set(Layer.objects.filter(social_account=account).values_list("kind", flat=True))
    for spec in _onboarding_layers(template):
        if spec["kind"] in existing:
            continue
        try:
            with transaction.atomic():
                Layer.objects.create(
                    organization_id=account.organization_id,
                    project_id=account.project_id,
                    social_account=account,
                    template=template,
                    kind=spec["kind"],
                    name=spec["name"],
                )
        except IntegrityError:
            pass  # provisioned concurrently by another worker
    return list(Layer.objects.filter(social_account=account))


def account_has_layers(*, account) -> bool:
    return Layer.objects.filter(social_account=account, kind__in=ACCOUNT_LAYER_KINDS).count() == len(
        ACCOUNT_LAYER_KINDS
    )


def project_content_layer_ensure(*, project) -> Layer:
    """The project's Social Content layer, created once per project."""
    try:
        with transaction.atomic():
            layer, _ = Layer.objects.get_or_create(
                project=project,
                social_account=None,
                kind=LayerKind.SOCIAL_CONTENT,
                defaults={"organization_id": project.organization_id, "name": LayerKind.SOCIAL_CONTENT.label},
            )
            return layer
    except IntegrityError:
        return Layer.objects.get(project=project, social_account=None, kind=LayerKind.SOCIAL_CONTENT)


# --- Content and schedules --------------------------------------------------------------------------


def container_create(*, project, media_type: str, media_urls: list[str], caption: str) -> ContentContainer:
    """Store a content container (shape already validated by the API's input serializer)."""
    return ContentContainer.objects.create(
        organization_id=project.organization_id,
        project=project,
        media_type=media_type,
        media_urls=list(media_urls),
        caption=caption or "",
    )


INSTAGRAM_PLACEMENT = {"video": "reels", "image": "feed", "carousel": "carousel"}
TIKTOK_PLACEMENT = {"video": "video", "image": "photo", "carousel": "photo"}
SCHEDULE_PAST_TOLERANCE = timedelta(minutes=5)
SCHEDULE_HORIZON = timedelta(days=365)
# Queued posts one account may hold: about three a day for the year ahead scheduling allows, more than the
# platforms publish for one creator (Instagram: 100 a day at most, TikTok's daily cap lower). Posts are never
# purged and each queued one costs platform calls and retries at its time, so a partner's loop scheduling the
# same post again and again would otherwise queue without end, and publish it as many times.
MAX_QUEUED_POSTS_PER_ACCOUNT = 1000
# The columns a post's messages are cut to (config/text.shorten: between graphemes, with "…"): a failed
# post's error_message is the partner's error.message. An attempt's message is looked up as stored (the
# holds after a restore), so it is cut the same way wherever it is written or matched.
MESSAGE_LENGTH = ScheduledPost.error_message.field.max_length
ATTEMPT_MESSAGE_LENGTH = ScheduledPostAttempt.message.field.max_length
CANCELED_BY_LENGTH = ScheduledPost.canceled_by.field.max_length


def placement_for(*, platform: str, media_type: str) -> str:
    table = INSTAGRAM_PLACEMENT if platform == "instagram" else TIKTOK_PLACEMENT
    return table[media_type]


@dataclass(frozen=True)
class Target:
    social_account_id: str
    mode: str


def posts_schedule(
    *, container: ContentContainer, targets: list[Target], scheduled_for: datetime
) -> list[ScheduledPost]:
    """Schedule `container` to every target at `scheduled_for`: all targets or none.

    Each target must be an account of the container's project that is not disconnected (reauth_required
    is accepted: the customer may reconnect before the time); `managed` needs the project's provider, an
    Instagram `draft` a draft delivery service (LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL); an account may hold at
    most MAX_QUEUED_POSTS_PER_ACCOUNT queued posts.
    Raises Validation naming the failing field (`targets.<i>.socialAccountId`, `scheduledFor`)."""
    now = timezone.now()
    if scheduled_for.tzinfo is None:
        raise Validation({"scheduledFor": ["Must include a timezone (e.g. 2026-04-20T17:00:00Z)."]})
    if scheduled_for < now - SCHEDULE_PAST_TOLERANCE:
        raise Validation({"scheduledFor": ["Must not be more than 5 minutes in the past."]})
    if scheduled_for > now + SCHEDULE_HORIZON:
        raise Validation({"scheduledFor": ["Must be at most 365 days ahead."]})
    ids = [t.social_account_id for t in targets]
    with transaction.atomic():
        accounts = {
            a.pk: a
            for a in SocialAccount.objects.select_for_update()
            # The container's organization too, not only its project: accounts keep the organization they
            # were connected in, so a project whose organization changed under them (the admin refuses it;
            # an UPDATE by hand would not) must not hand them to the project's new organization.
            .filter(pk__in=ids, project_id=container.project_id, organization_id=container.organization_id)
            .only("id", "platform", "status", "scopes", "organization_id", "project_id")
            # Locked in id order: two schedules of overlapping accounts read in different orders by their
            # plans would each hold one the other waits for (a deadlock, a 500 to one of them).
            .order_by("pk")
        }
        provider = ManagedProvider.objects.filter(project_id=container.project_id, enabled=True).first()
        # Counted under the accounts' locks: two schedules of one account at once cannot both pass the cap.
        queued = dict(
            ScheduledPost.objects.filter(social_account_id__in=list(accounts), status=ScheduledPost.Status.QUEUED)
            .values("social_account_id")
            .annotate(n=Count("id"))
            .values_list("social_account_id", "n")
        )
        errors: dict[str, list[str]] = {}
        seen: set[str] = set()
        for index, target in enumerate(targets):
            account = accounts.get(target.social_account_id)
            if account is None:
                errors[f"targets.{index}.socialAccountId"] = ["No such account in the container's project."]
            elif account.status == SocialAccount.Status.DISCONNECTED:
                errors[f"targets.{index}.socialAccountId"] = ["This account is disconnected."]
            elif target.social_account_id in seen:
                errors[f"targets.{index}.socialAccountId"] = ["The same account is targeted twice."]
            elif queued.get(target.social_account_id, 0) >= MAX_QUEUED_POSTS_PER_ACCOUNT:
                errors[f"targets.{index}.socialAccountId"] = [
                    f"This account has {MAX_QUEUED_POSTS_PER_ACCOUNT} posts queued, the most one account may have "
                    "waiting: cancel some (DELETE /v1/scheduled-posts/{id}) or schedule this once some have been "
                    "published."
                ]
            elif target.mode == ScheduledPost.Mode.MANAGED and provider is None:
                errors[f"targets.{index}.mode"] = ["The project has no managed-distribution provider configured."]
            elif problem := _grant_problem(account, target.mode):
                errors[f"targets.{index}.mode"] = [problem]
            elif (
                target.mode == ScheduledPost.Mode.DRAFT
                and account.platform == "instagram"
                and not settings.LAYERS_INSTAGRAM_DRAFT_DELIVERY_URL
            ):
                # Instagram has no draft API: its drafts go through a delivery service, and without one every
                # such post would fail at its time. Said now, while the partner can choose another mode.
                errors[f"targets.{index}.mode"] = [
                    "Instagram drafts cannot be delivered: Instagram has no draft API and no draft delivery "
                    "service is configured. Use mode publish (or managed)."
                ]
            elif (
                account.platform == "instagram"
                and container.media_type == "carousel"
                and not (2 <= len(container.media_urls) <= 10)
            ):
                errors[f"targets.{index}.socialAccountId"] = ["Instagram carousels take 2 to 10 items."]
            elif problem := _caption_problem(platform=account.platform, container=container, mode=target.mode):
                errors[f"targets.{index}.socialAccountId"] = [problem]
            seen.add(target.social_account_id)
        if errors:
            raise Validation(errors)
        posts = [
            ScheduledPost(
                organization_id=container.organization_id,
                project_id=container.project_id,
                container=container,
                social_account_id=target.social_account_id,
                mode=target.mode,
                scheduled_for=scheduled_for,
                due_at=scheduled_for,
                placement=placement_for(
                    platform=accounts[target.social_account_id].platform, media_type=container.media_type
                ),
            )
            for target in targets
        ]
        ScheduledPost.objects.bulk_create(posts)
    return posts


def _grant_problem(account: SocialAccount, mode: str) -> str | None:
    """Why the account's grant cannot post in `mode`, if it cannot: a TikTok grant may hold video.upload
    without video.publish or the other way round (the customer unticked one), and TikTok refuses the other
    mode's calls. Said now, while the partner can choose the other mode or have the customer reauthorize,
    rather than as a failed post hours later. Only for a connected account whose grant's scopes are known:
    an account awaiting a reauth gets a new grant before its posts are due, and an account connected before
    scopes were stored is accepted as before (its post says at its time if the scope is missing)."""
    if account.status != SocialAccount.Status.CONNECTED:
        return None
    missing = grant_lacks_mode(account.platform, mode, stored_scopes(account.scopes))
    if missing is None:
        return None
    name = Platform(account.platform).label
    return (
        f"The account's {name} grant lacks {missing}, which posts in mode {mode} need: {name} would refuse this "
        f"post. A reauth of the account (POST /v1/projects/{{projectId}}/social/reauth-url, with {missing} among "
        "its scopes, as it is by default) grants it."
    )


def _caption_problem(*, platform: str, container: ContentContainer, mode: str) -> str | None:
    """Why the target's platform would refuse the container's caption, if it would."""
    if platform == "tiktok":
        return _tiktok_caption_problem(container, mode)
    if platform == "instagram":
        return _instagram_caption_problem(container, mode)
    return None


def _tiktok_caption_problem(container: ContentContainer, mode: str) -> str | None:
    """Why TikTok would refuse the container's caption, if it would: at most 2200 UTF-16 code units in a
    video's title, 4000 in a photo post's description (the container takes up to 4000 characters, and emoji
    count two units each). Said when scheduling, not at the post's time as a failed post. Managed posts go to
    the provider as they are, not counted in UTF-16, but held to the same limits in characters: no caption
    longer than the post's TikTok field was ever scheduled to a provider."""
    from accounts.platforms.tiktok import caption_limit, utf16_length

    where = "a video's title" if container.media_type == "video" else "a photo post's description"
    if mode == ScheduledPost.Mode.MANAGED:
        limit = caption_limit(mode=ScheduledPost.Mode.PUBLISH, media_type=container.media_type)
        if limit is None or len(container.caption) <= limit:
            return None
        return (
            f"The caption is {len(container.caption)} characters long: a managed TikTok post takes at most "
            f"{limit}, TikTok's limit in {where}."
        )
    limit = caption_limit(mode=mode, media_type=container.media_type)
    length = utf16_length(container.caption)
    if limit is None or length <= limit:
        return None
    return (
        f"The caption is too long for TikTok: it counts {length} UTF-16 code units (emoji count two), and "
        f"TikTok takes at most {limit} in {where}."
    )


def _instagram_caption_problem(container: ContentContainer, mode: str) -> str | None:
    """Why Instagram would refuse the container's caption, if it would: more than 2200 characters in any mode
    (the container takes up to 4000, for TikTok's photo descriptions, and whatever the mode the post ends on
    Instagram: a draft posted by the creator, a managed post by the provider); more than 30 hashtags or 20
    @mentions only in mode publish: a draft's creator can edit it before posting by hand, and a managed post
    goes to the provider as it is."""
    from accounts.platforms.instagram import (
        CAPTION_HASHTAGS_MAX,
        CAPTION_MAX,
        CAPTION_MENTIONS_MAX,
        caption_hashtags,
        caption_mentions,
    )

    if len(container.caption) > CAPTION_MAX:
        return f"The caption is {len(container.caption)} characters long: Instagram takes at most {CAPTION_MAX}."
    if mode != ScheduledPost.Mode.PUBLISH:
        return None
    if (hashtags := caption_hashtags(container.caption)) > CAPTION_HASHTAGS_MAX:
        return (
            f"The caption has {hashtags} hashtags: Instagram takes at most {CAPTION_HASHTAGS_MAX} and refuses "
            "the post otherwise."
        )
    if (mentions := caption_mentions(container.caption)) > CAPTION_MENTIONS_MAX:
        return (
            f"The caption has {mentions} @mentions: Instagram takes at most {CAPTION_MENTIONS_MAX} and refuses "
            "the post otherwise."
        )
    return None


def post_cancel(*, post_id: str, actor=None, api_key=None) -> ScheduledPost:
    """queued → canceled, recording who canceled it: the staff `actor` (the partner is then told Layers did), or
    the partner's `api_key` (its own DELETE: no reason, it knows). Raises Conflict POST_NOT_CANCELABLE in any
    other state."""
    reason = CancelReason.STAFF if actor is not None else ""
    updated = ScheduledPost.objects.filter(pk=post_id, status=ScheduledPost.Status.QUEUED).update(
        **_canceled_fields(cause="", who=acting(actor=actor, api_key=api_key), reason=reason)
    )
    post = ScheduledPost.objects.get(pk=post_id)
    if not updated:
        raise _not_cancelable(post.status)
    return post


def _not_cancelable(status: str) -> Conflict:
    if status == ScheduledPost.Status.CANCELED:
        return Conflict("This post is already canceled.", code="POST_NOT_CANCELABLE")
    return Conflict(f"Only queued posts can be canceled; this one is {status}.", code="POST_NOT_CANCELABLE")


def posts_cancel(*, post_ids: list[str], actor=None) -> BatchOutcome:
    """post_cancel of many posts at once, for staff (the admin's "Cancel selected queued posts" over a whole
    list): the queued ones canceled in one transaction, the others left with post_cancel's Conflict. Locked in
    key order, as _queued_canceled locks: two staff canceling the same list, or an off-boarding canceling the
    organization's posts meanwhile, queue behind each other instead of deadlocking, and the second finds them
    canceled and says so."""
    outcome = BatchOutcome()
    with transaction.atomic():
        canceled = set(
            ScheduledPost.objects.filter(pk__in=post_ids, status=ScheduledPost.Status.QUEUED)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        ScheduledPost.objects.filter(pk__in=canceled).update(
            **_canceled_fields(cause="", who=acting(actor=actor), reason=CancelReason.STAFF)
        )
        statuses = dict(
            ScheduledPost.objects.filter(pk__in=[pk for pk in post_ids if pk not in canceled]).values_list(
                "pk", "status"
            )
        )
    for pk in post_ids:
        if pk in canceled:
            outcome.done.append(pk)
        elif pk in statuses:
            outcome.skipped[pk] = _not_cancelable(statuses[pk])
        else:
            outcome.skipped[pk] = Conflict("No such post.", code="POST_NOT_CANCELABLE")
    return outcome


def posts_cancel_for_account(*, account, cause: str, reason: str, actor=None, api_key=None) -> int:
    """Cancel every queued post of `account` (revoke, lease release). Runs in the caller's transaction.
    A post already claimed by a worker (publishing) is left to that run: it fails ACCOUNT_DISCONNECTED unless
    it already reached the platform or the managed provider (_unless_account_gone).
    `cause` ("account revoked", "lease released") and who acted (`actor`, `api_key`) are recorded on each, for
    support; `reason` (a CancelReason) is what the partner is told, even when its own call revoked the account:
    its DELETE was of the account, and a post it scheduled vanished with it."""
    posts = ScheduledPost.objects.filter(social_account=account)
    return _queued_canceled(posts, cause=cause, who=acting(actor=actor, api_key=api_key), reason=reason)


def posts_cancel_for_organization(*, organization_id: str, cause: str, reason: str, by: str) -> int:
    """Cancel every queued post of the organization (its off-boarding), as posts_cancel_for_account does for
    one account: a post a worker already claimed (publishing) is left to that run. `by` names who acted."""
    return _queued_canceled(
        ScheduledPost.objects.filter(organization_id=organization_id), cause=cause, who=by, reason=reason
    )


def _queued_canceled(posts, *, cause: str, who: str, reason: str) -> int:
    """Cancel the queued ones of `posts`, recording why and who acted on each; how many.

    Their rows are locked in key order first (the subquery's ORDER BY … FOR UPDATE), as posts_cancel locks
    staff's batches: one UPDATE alone locks its rows in whatever order its plan reads them, and two cancels of
    many posts over the same rows in different orders (an off-boarding's and staff canceling a whole list) could
    each hold a row the other waits for, a deadlock that fails one of them."""
    locked = posts.filter(status=ScheduledPost.Status.QUEUED).select_for_update().order_by("pk").values("pk")
    return ScheduledPost.objects.filter(pk__in=locked).update(**_canceled_fields(cause=cause, who=who, reason=reason))


def _canceled_fields(*, cause: str, who: str, reason: str) -> dict:
    """A cancel's columns: `cause` and `who` make canceled_by, support's free text (it names staff and API keys:
    never shown to the partner); `reason`, a CancelReason or "" (the partner's own cancel), is the partner's
    (serializers.post_error). Required of every caller, so that no cancel path forgets to say why."""
    return {
        "status": ScheduledPost.Status.CANCELED,
        "canceled_at": timezone.now(),
        "canceled_by": shorten(" by ".join(part for part in (cause, who) if part), CANCELED_BY_LENGTH),
        "cancel_reason": reason,
    }


def acting(*, actor=None, api_key=None) -> str:
    """Who acted, as support reads it on a post's page: `staff <username>` for a staff `actor`, or the
    partner and the API key it called with (its name, its id, and the start of the key as the partner holds it,
    `lyr_<prefix>…`, as the lease history names it; never the key); "" when neither is known (a command)."""
    if actor is not None:
        return staff_source(actor)
    if api_key is not None:
        return f"partner ({api_key_source(api_key)})"
    return ""


def post_retry(*, post_id: str, actor=None, checked_on_platform: bool = False) -> ScheduledPost:
    """Ops: a failed post goes back to the queue, due now. Raises Conflict for other states, for an account
    that is disconnected (revoking promised none of its posts would stay queued), and for a post that may
    already be on the platform (_outcome_unknown) unless `checked_on_platform`: a retry would post it a
    second time.

    The post's error and publish id are cleared (its attempts count from 0 again); the failure stays in its
    attempts (the failed one keeps its code, words and publish id), followed by a row saying who queued it
    again."""
    outcome = posts_retry(post_ids=[post_id], actor=actor, checked_on_platform=checked_on_platform)
    if post_id in outcome.skipped:
        raise outcome.skipped[post_id]
    return ScheduledPost.objects.get(pk=post_id)


def post_attempts_mark() -> dict:
    """The publishing attempts recorded so far, for posts_retry's `attempted_after` (config.marks: ids, which
    only grow whatever the hosts' clocks say, with those not committed yet at the click: a publisher failing a
    post as staff click commits after the click, and its attempt is recorded since)."""
    return attempts_mark(ScheduledPostAttempt)


def posts_retry(
    *, post_ids: list[str], actor=None, checked_on_platform: bool = False, attempted_after: dict | int | None = None
) -> BatchOutcome:
    """post_retry of many posts at once (the admin's retry of a whole list after an outage), in one
    transaction, each under post_retry's rules; the others left with the Conflict post_retry raises.

    `attempted_after`: post_attempts_mark() when staff chose the posts. A post with an attempt recorded since
    (retried by someone else and failed again, or failed by its publisher as staff clicked) is left alone: the
    retry, and above all "retry anyway" (staff's word that the post they looked at is not on the platform), was
    about the failure they saw. A worker doing the rest of a long list may run minutes later; it must not send
    again a post that may have reached the platform since. Compared by id, not time: a worker's clock a few
    seconds ahead would have made every post that failed just before the click look changed since. Not by the
    newest id alone: an attempt committed after the click may have a lower id than one committed before it
    (config.marks); a plain id, from a task queued before the mark carried more, is read as it was then.

    The accounts are locked first, as the revoke locks its account before canceling its queued posts: read
    without the lock, a revoke committing between that read and the requeue left a queued post on a
    disconnected account (the revoke found it still failed). Accounts, then posts, each in key order: two
    staff retrying the same list queue behind each other, and the second finds the posts queued already."""
    outcome = BatchOutcome()
    with transaction.atomic():
        account_ids = set(
            ScheduledPost.objects.filter(pk__in=post_ids).values_list("social_account_id", flat=True).distinct()
        )
        list(SocialAccount.objects.select_for_update().filter(pk__in=account_ids).order_by("pk").values_list("pk"))
        # Only the failed ones are locked (and read): no other may be retried, and a post being published is
        # locked by its publisher, which may want its account, held here, next.
        posts = {
            post.pk: post
            for post in ScheduledPost.objects.select_for_update(of=("self",))
            .select_related("social_account")
            .filter(pk__in=post_ids, status=ScheduledPost.Status.FAILED)
            .order_by("pk")
        }
        changed_since = set()
        if attempted_after is not None:
            changed_since = set(
                ScheduledPostAttempt.objects.filter(recorded_since(attempted_after), post_id__in=posts).values_list(
                    "post_id", flat=True
                )
            )
        retried = []
        for pk in post_ids:
            try:
                _check_retryable(posts.get(pk), checked_on_platform=checked_on_platform, changed=pk in changed_since)
            except Conflict as refused:
                outcome.skipped[pk] = refused
                continue
            retried.append(posts[pk])
        ScheduledPost.objects.filter(pk__in=[post.pk for post in retried]).update(
            status=ScheduledPost.Status.QUEUED,
            due_at=timezone.now(),
            attempts=0,
            requeues=0,
            error_code="",
            error_message="",
            publish_id="",
            publish_attempted_at=None,
            claimed_until=None,
            next_check_at=None,
            # The failure may have been the prepared container itself (its media refused): make a new one.
            prepare_claimed_at=None,
            prepared_publish_id="",
        )
        now, who = timezone.now(), acting(actor=actor)
        message = f"Queued again{f' by {who}' if who else ''}" + (
            ", who checked it is not on the platform." if checked_on_platform else "."
        )
        ScheduledPostAttempt.objects.bulk_create(
            ScheduledPostAttempt(
                post=post,
                started_at=now,
                finished_at=now,
                outcome=ScheduledPostAttempt.Outcome.STAFF_RETRY,
                message=message,
            )
            for post in retried
        )
    outcome.done = [post.pk for post in retried]
    outcome.notes = {post.pk: f"its publish id was {post.publish_id}" for post in retried if post.publish_id}
    return outcome


def _check_retryable(post: ScheduledPost | None, *, checked_on_platform: bool, changed: bool) -> None:
    """Raise the Conflict that keeps `post` (read locked, or None: not found) from being queued again."""
    if post is None or post.status != ScheduledPost.Status.FAILED:
        raise Conflict("Only failed posts can be retried.", code="POST_NOT_RETRYABLE")
    if post.social_account.status == SocialAccount.Status.DISCONNECTED:
        raise Conflict(
            "The account is disconnected: its posts are not queued again (connect it and schedule anew).",
            code="ACCOUNT_DISCONNECTED",
        )
    if changed:
        raise Conflict(
            "An attempt of it was recorded after this retry was asked for (it was being published, or someone "
            "retried it, and it failed again): look at it again before retrying it.",
            code="POST_CHANGED",
        )
    if _outcome_unknown(post) and not checked_on_platform:
        raise Conflict(
            f"It may already be on the platform (publish id {post.publish_id or 'not recorded'}; "
            f"{post.error_code}): check the account, then retry anyway if it is not there.",
            code="POST_OUTCOME_UNKNOWN",
        )


# Failures that say nothing for sure about a post that reached the platform: an answer lost or unreadable,
# a day of processing without an outcome (PLATFORM_UNAVAILABLE), or its token refused while Layers waited
# for the outcome (CREDENTIAL_INVALID). Every other failure is the platform's own answer that it did not
# take the post (refused content or media, its quota): a retry cannot make it appear twice.
OUTCOME_UNKNOWN_CODES = frozenset({"PLATFORM_UNAVAILABLE", "CREDENTIAL_INVALID"})


def _outcome_unknown(post: ScheduledPost) -> bool:
    """Whether a failed post may be live: it reached the platform (a publish id, or Layers had started
    sending it) and its failure is not the platform's own refusal."""
    return bool(post.publish_id or post.publish_attempted_at) and post.error_code in OUTCOME_UNKNOWN_CODES


def outcome_unknown_q() -> Q:
    """_outcome_unknown as a filter of failed posts (the admin counts them before a "retry anyway")."""
    reached = ~Q(publish_id="") | Q(publish_attempted_at__isnull=False)
    return Q(status=ScheduledPost.Status.FAILED, error_code__in=OUTCOME_UNKNOWN_CODES) & reached


# --- Dispatch and publish ---------------------------------------------------------------------------

# A worker holds a claimed post this long; past it the resolver takes over (the worker is presumed dead).
# Well above the longest publish (three platform calls, each with its own timeout). The lease starts at the
# claim, so claimed posts must not wait long for a worker either: the dispatcher keeps at most
# LAYERS_DISPATCH_MAX_WAITING of them waiting (posts_claimed_waiting), the rest stay queued in the table.
CLAIM_LEASE = timedelta(minutes=5)
# The platform's own "not now" (an outage, a 5xx, a timeout before anything was created, a rate limit) is
# tried again until settings.LAYERS_PUBLISH_RETRY_WINDOW (60 minutes) after the post's time, 30 s after the
# first refusal, doubling, at most every 5 minutes: a platform back from an outage gets the posts it missed
# within 5 minutes (_retry_later). No count caps it: the window does (12 attempts an hour once grown).
RETRY_BACKOFF_FIRST = timedelta(seconds=30)
RETRY_BACKOFF_MAX = timedelta(minutes=5)
# Runs that stopped before the post reached the platform (the worker died or raised), queued again by the
# resolver: given up after this many, so that an error that repeats cannot loop (_resolve).
MAX_LOST_RUNS = 5
EXPIRED_UNREFRESHABLE = "The account's token expired and could not be refreshed; it needs a reauth."
# The token works but was granted without the scope the post needs (TikTok's scope_not_authorized: video.publish
# for publish mode, video.upload for drafts; Instagram's codes 10 and 200-299): saying "rejected the token"
# would send the partner hunting for a dead token. The remedy is the same, a reauth that grants it. A TikTok
# grant known to lack it and to hold the other mode's scope fails the post alone instead (_mode_scope_refused).
PERMISSION_MISSING = "The account's token lacks the publishing permission; it needs a reauth."
# A post due while its account is reauth_required. Not "expired": the account may be there because the creator
# removed the app (TikTok's authorization.removed, Instagram's deauthorize), or the platform refused the token,
# and support would tell the customer their login lapsed. The post is not kept for after the reauth: it says so.
NEEDS_REAUTH = (
    "The account needs a reauth: the platform no longer accepts its token (refused, not refreshable, or the app "
    "removed by the creator). Schedule the post again once the customer has reconnected the account."
)
# Appended to a CREDENTIAL_INVALID after the request that creates the post went out (publish_attempted_at:
# TikTok's init, an Instagram draft delivery): the platform took the post and then the token died before Layers
# read how it ended. The partner's reflex for the code is "reauth, schedule again", which would post it twice
# (post_retry skips such a post for the same reason: _outcome_unknown).
MAY_BE_LIVE = (
    " The platform had accepted the post before that, so it may already be on the platform: check the account "
    "there before scheduling it again."
)
STATUS_POLL_FIRST = timedelta(seconds=2)
STATUS_POLL_MAX = timedelta(minutes=2)
PUBLISH_GIVE_UP = timedelta(hours=24)
# Instagram drops an unpublished container 24 h after it was made; an hour's margin for clocks and queues.
PREPARED_USABLE_FOR = timedelta(hours=23)
# Preparations handed out and not finished are at most this many: slow workers then leave the rest of a big
# campaign for later ticks instead of piling up messages that a burst coming due would queue behind. One not
# finished after PREPARE_IN_FLIGHT_FOR (a few platform calls, each with its timeout) no longer counts.
PREPARE_IN_FLIGHT_MAX = 200
PREPARE_IN_FLIGHT_FOR = timedelta(minutes=2)


def publishing_claim(now: datetime) -> dict:
    """What claiming a queued post writes (queued → publishing, with a lease until a worker or the resolver
    takes it). For an UPDATE that is conditional on status = queued."""
    return {
        "status": ScheduledPost.Status.PUBLISHING,
        # When this attempt started: the processing budget counts from it (_check_again), so a post first
        # sent a day late (workers down) still gets its day.
        "due_at": now,
        "claimed_until": now + CLAIM_LEASE,
        "next_check_at": now + CLAIM_LEASE,
        "attempts": F("attempts") + 1,
    }


# What a worker whose clock is off from the database's does not do (config/clock.py): every claim compares
# times with this process's clock (a post due, a lease run out), and a worker 90 s ahead published posts 90 s
# early, one 5 minutes ahead took over and failed posts another worker was publishing. The ticks of the other
# workers claim them (beat sends each tick to any worker).
CLOCK_OFF_CLAIMS = "dispatcher: this worker claims no post (due, to check or to prepare); the other workers' ticks do"


@dataclass(frozen=True)
class Claimable:
    """Which posts one of the dispatcher's claims takes, as SQL over the posts table's own columns: `status`
    (written into the statements, not bound: a partial index on a status serves a literal only, and prepared
    statements, LAYERS_DB_PREPARED_STATEMENTS, would be planned for any status), `due` the time column the
    claim goes by (soonest first, up to the claim's `due_by`), and `also` any further condition, starting with
    AND, with named parameters. Unqualified: the claim reads them in several places, and checks them again on
    each row it locks (a row another dispatcher changed meanwhile is then left out)."""

    status: str
    due: str
    also: str = ""

    def sql(self) -> str:
        return f"status = '{self.status}' AND {self.due} <= %(due_by)s{self.also}"


# A claim shares out the soonest FAIR_CLAIM_WINDOW_BATCHES × `limit` claimable posts (one index range, the
# cost of the claim whatever the number of organizations) while every claimable post fits in that window,
# which is the usual case: then every organization with one takes part. Past it, each organization's soonest
# are read on their own (_PER_ORGANIZATION_CANDIDATES_SQL), one index probe per organization.
FAIR_CLAIM_WINDOW_BATCHES = 20
# How many candidates, first by turns, a claim hands to the lock (× `limit`): one batch would fill the claim
# from a single organization's; the second is there for rows a concurrent dispatcher holds (SKIP LOCKED).
FAIR_CLAIM_BATCHES_PER_ORGANIZATION = 2

# How many posts are claimable, counted no further than one past the window (on the claim's partial index by
# its due column): whether the window holds them all.
_DUE_IN_WINDOW_SQL = """
SELECT count(*) FROM (
    SELECT 1 FROM {table} WHERE {claimable} ORDER BY {due} LIMIT %(past_window)s
) due
"""

# Every claimable post is in the window: the window's posts (one index range).
_WINDOW_CANDIDATES_SQL = """
    SELECT id AS post_id, organization_id, {due} AS due_time FROM {table}
    WHERE {claimable}
    ORDER BY {due} LIMIT %(window)s
"""

# More claimable posts than the window: each organization's soonest ones, read on its own (a partial index by
# organization and the due column: one short index range per organization). Sharing out the window instead
# left out every organization but one whose burst filled it. An organization's posts past turn `each` -
# (organizations with one) + 1 cannot be among the `each` candidates (every other organization has its first
# one ahead of them), so no more are read: 10,000 organizations with 10 due each read 10,000 posts, not 100,000.
_PER_ORGANIZATION_CANDIDATES_SQL = """
    WITH due_organizations AS MATERIALIZED (
        SELECT o.id FROM {organizations} o WHERE EXISTS (
            SELECT 1 FROM {table} WHERE organization_id = o.id AND {claimable}
        )
    )
    SELECT d.* FROM due_organizations o CROSS JOIN LATERAL (
        SELECT id AS post_id, organization_id, {due} AS due_time FROM {table}
        WHERE organization_id = o.id AND {claimable}
        ORDER BY {due} LIMIT GREATEST(1, %(each)s + 1 - (SELECT count(*) FROM due_organizations))
    ) d
"""

# The candidates in the order of their turns, cut to `each`.
_TURNS_SQL = """
WITH due AS MATERIALIZED ({candidates})
SELECT post_id FROM (
    SELECT post_id, due_time, row_number() OVER (PARTITION BY organization_id ORDER BY due_time, post_id) AS turn
    FROM due
) ranked
ORDER BY turn, due_time, post_id
LIMIT %(each)s
"""

# Then the first `limit` of them still claimable are locked, in that order (the claimable conditions name the
# table's columns alone: r's are post_id and turn). A statement of its own, given the ids: joined back to the
# table in the statement that picked them, the planner took the candidates for the single row it expects of a
# due range (next_check_at is set on publishing rows only, a few of the table's), and read the due range
# again for each of them: 118 ms for 300 checks due here, growing with their square. An array's length it
# knows: the due range is read once, or each id is one probe of the primary key.
_LOCK_IN_TURN_SQL = """
SELECT p.id FROM unnest(%(ids)s::varchar[]) WITH ORDINALITY AS r(post_id, turn)
JOIN {table} p ON p.id = r.post_id
WHERE {claimable}
ORDER BY r.turn
LIMIT %(limit)s
FOR UPDATE OF p SKIP LOCKED
"""

# SQLite (make run): one dispatcher, soonest first.
_SOONEST_CLAIM_SQL = "SELECT id FROM {table} WHERE {claimable} ORDER BY {due} LIMIT %(limit)s"


def _claim_by_turns(
    claimable: Claimable, *, due_by: datetime, limit: int, updates: dict, params: dict | None = None
) -> list[str]:
    """Lock up to `limit` `claimable` posts whose due column has passed `due_by`, apply `updates` to them in
    the same transaction, and return their ids in the order they should be handed out: organizations take
    turns. Each organization's soonest claimable post goes first, then each one's second, and so on (by the
    due column within an organization, and between equal turns). Strictly soonest first, one organization's
    burst of 3,000 posts went to the workers ahead of another's post due the same instant (~70 s late here).
    Every organization with a claimable post takes part, however many another has: the turns are shared among
    the soonest FAIR_CLAIM_WINDOW_BATCHES × `limit` while they are all there is; a burst larger than that
    (`limit` is often a few dozen) held back everyone else's posts after its start until it had drained, so
    past the window each organization's soonest are read on their own. Rows another dispatcher holds are
    skipped (FOR UPDATE SKIP LOCKED: each row goes to exactly one of them, none waits), and a row another one
    claimed since this one read it is left out (its conditions are checked again on the row locked).
    `params` are the named parameters of `claimable.also`."""
    adapt = connection.ops.adapt_datetimefield_value
    params = {key: adapt(value) if isinstance(value, datetime) else value for key, value in (params or {}).items()}
    window = limit * FAIR_CLAIM_WINDOW_BATCHES
    params |= {
        "due_by": adapt(due_by),
        "limit": limit,
        "window": window,
        "past_window": window + 1,
        "each": limit * FAIR_CLAIM_BATCHES_PER_ORGANIZATION,
    }
    names = {
        "table": ScheduledPost._meta.db_table,
        "organizations": Organization._meta.db_table,
        "claimable": claimable.sql(),
        "due": claimable.due,
    }
    with transaction.atomic():
        with connection.cursor() as cursor:
            if connection.vendor != "postgresql":  # make run on SQLite: one dispatcher, no turns needed
                claim_sql = _SOONEST_CLAIM_SQL.format(**names)
            else:
                # The planner's estimate of the per-organization read grows with the organizations table (a
                # probe each): past about 2,000 organizations it crossed PostgreSQL's jit_above_cost, and
                # compiling took 250-300 ms of a claim doing 20-50 ms of work, every tick.
                cursor.execute("SET LOCAL jit = off")
                cursor.execute(_DUE_IN_WINDOW_SQL.format(**names), params)
                count = cursor.fetchone()[0]
                if not count:  # an idle tick: one index probe, as before the turns
                    return []
                candidates = _WINDOW_CANDIDATES_SQL if count <= window else _PER_ORGANIZATION_CANDIDATES_SQL
                cursor.execute(_TURNS_SQL.format(candidates=candidates.format(**names)), params)
                params["ids"] = [row[0] for row in cursor.fetchall()]
                claim_sql = _LOCK_IN_TURN_SQL.format(**names)
            cursor.execute(claim_sql, params)
            ids = [row[0] for row in cursor.fetchall()]
        if ids:
            ScheduledPost.objects.filter(pk__in=ids).update(**updates)
    return ids


# The publisher's claim (sp_due_queued, sp_org_due_queued).
DUE_POSTS = Claimable(status=ScheduledPost.Status.QUEUED.value, due="due_at")


def posts_claim_due(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Claim up to `limit` due queued posts (queued → publishing) and return their ids, in the order they
    should be sent: organizations take turns (_claim_by_turns), so one partner's campaign does not hold back
    another's posts. None while this process's clock is off (CLOCK_OFF_CLAIMS)."""
    if not clock.clock_trustworthy(refusing=CLOCK_OFF_CLAIMS):
        return []
    now = now or timezone.now()
    return _claim_by_turns(DUE_POSTS, due_by=now, limit=limit, updates=publishing_claim(now))


def posts_claimed_waiting() -> int:
    """Claimed posts no worker has started yet (no platform call made, no publish id): the dispatcher's
    backlog in the broker. Counted on the partial index of publishing rows."""
    return ScheduledPost.objects.filter(
        status=ScheduledPost.Status.PUBLISHING, publish_id="", publish_attempted_at__isnull=True
    ).count()


# The status-check claim (sp_publishing_check, sp_org_check_publishing): posts sent to the platform awaiting
# their outcome, and posts whose worker's lease ran out.
TO_CHECK = Claimable(status=ScheduledPost.Status.PUBLISHING.value, due="next_check_at")


def posts_checks_in_flight(*, now: datetime) -> int:
    """Status checks handed out and not finished: posts the platform was sent (a publish id, or the creating
    call marked) under a claim still alive at `now`. A check claim writes claimed_until = next_check_at = its
    time + CLAIM_LEASE (posts_claim_for_resolution), and a check that ends clears claimed_until (_check_again,
    _publish_throttled, _retry_later, _finish) or settles the post; a claim whose lease ran out no longer
    counts, as its post is due again (its message was lost with its worker, or is still waiting: that one is
    stale, post_resolve's `claim`). The publisher's own run counts as well for the moment between storing the
    publish id and its first check (next_check_at a few seconds ahead, its claim alive): it is that check.
    Claims of posts not sent yet are the publishes waiting (posts_claimed_waiting), bounded on their own.

    Read on sp_publishing_check (next_check_at, publishing rows): the range ahead of `now` holds the live
    claims and the posts whose next check is set for later (at most STATUS_POLL_MAX, or a throttle's backoff,
    ahead). Measured among 1M posts: 1.2 ms with 2,400 rows in that range; 50 ms with 47,000 (tens of
    thousands of posts in processing at once), where posts_claimed_waiting, which reads every publishing row,
    took 39 ms."""
    return (
        ScheduledPost.objects.filter(
            status=ScheduledPost.Status.PUBLISHING, next_check_at__gt=now, claimed_until__gt=now
        )
        .exclude(publish_id="", publish_attempted_at__isnull=True)
        .count()
    )


def checks_in_flight_max() -> int:
    """The most status checks handed out and not finished at once (posts_checks_in_flight):
    LAYERS_DISPATCH_MAX_WAITING, the bound of the publishes waiting. A check waits on the same queue and workers
    as a publish and weighs about as much (a platform call or two), and that setting is the operator's word for
    how many messages the workers get through well within CLAIM_LEASE (README: raised with the workers); a
    knob of its own would need the same sizing. Counted apart from the publishes, not shared with them: a
    burst of publishes would otherwise hold back every check for its length, and an Instagram post goes live
    in its check (media_publish). So a post due now waits behind at most that many checks, where before it
    waited behind every post awaiting one, and more: a check waiting past its lease was handed out again."""
    return settings.LAYERS_DISPATCH_MAX_WAITING


def posts_claim_for_resolution(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Claim publishing posts whose status check is due or whose worker's lease ran out, at most as many as
    leave checks_in_flight_max() handed out and not finished (posts_checks_in_flight). Without that bound a
    slow platform (5 s a call) left checks waiting in the broker past their lease: each was claimed and queued
    again, the backlog grew without end, and posts due now waited behind it. Organizations take turns, as in
    posts_claim_due (_claim_by_turns): strictly the longest waiting first, one partner's campaign of thousands
    of posts awaiting their checks (each asked again every 2 minutes at most) made every other partner's post
    wait behind it to become `published`. None while this process's clock is off (CLOCK_OFF_CLAIMS): it would
    read another worker's lease as run out, and fail a post that worker is putting live."""
    if not clock.clock_trustworthy(refusing=CLOCK_OFF_CLAIMS):
        return []
    now = now or timezone.now()
    limit = min(limit, checks_in_flight_max() - posts_checks_in_flight(now=now))
    if limit <= 0:
        return []
    return _claim_by_turns(
        TO_CHECK,
        due_by=now,
        limit=limit,
        updates={"next_check_at": now + CLAIM_LEASE, "claimed_until": now + CLAIM_LEASE},
    )


def posts_claim_checks(*, limit: int = 500) -> list[tuple[str, str]]:
    """posts_claim_for_resolution for the dispatcher's messages: each post id with its claim, for post_resolve's
    `claim` (the claim's claimed_until, the same for every post of one claim, ISO 8601)."""
    now = timezone.now()
    claim = (now + CLAIM_LEASE).isoformat()
    return [(post_id, claim) for post_id in posts_claim_for_resolution(now=now, limit=limit)]


_INSTAGRAM_PLACEMENTS = ", ".join(f"'{placement}'" for placement in sorted(set(INSTAGRAM_PLACEMENT.values())))
# The preparation's claim (sp_due_queued, sp_org_due_queued): queued Instagram posts to publish (the placement
# says the platform without a join), not yet taken for it, due within the claim's `due_by` but not yet due.
TO_PREPARE = Claimable(
    status=ScheduledPost.Status.QUEUED.value,
    due="due_at",
    also=(
        " AND due_at > %(now)s"
        f" AND mode = '{ScheduledPost.Mode.PUBLISH.value}'"
        f" AND placement IN ({_INSTAGRAM_PLACEMENTS})"
        " AND prepare_claimed_at IS NULL"
    ),
)


def posts_claim_for_preparation(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Claim queued Instagram posts (mode publish) due within LAYERS_PREPARE_AHEAD whose container has not
    been made yet, for post_prepare. A post already due is left to the publisher, which makes its container
    itself. Each post is claimed for this once: a preparation that fails or dies is not tried again, and the
    publisher then makes the container at the post's time, as it would without preparation. Organizations take
    turns, as in posts_claim_due (_claim_by_turns): soonest first, one partner's campaign took every slot in
    flight (PREPARE_IN_FLIGHT_MAX) until it was all prepared, and another partner's reel due a few minutes
    after its start waited at its time for Instagram to process the media. None while this process's clock is
    off (CLOCK_OFF_CLAIMS)."""
    if not clock.clock_trustworthy(refusing=CLOCK_OFF_CLAIMS):
        return []
    now = now or timezone.now()
    ahead = settings.LAYERS_PREPARE_AHEAD
    if not ahead:
        return []
    window = ScheduledPost.objects.filter(status=ScheduledPost.Status.QUEUED, due_at__gt=now, due_at__lte=now + ahead)
    in_flight = window.filter(prepare_claimed_at__gte=now - PREPARE_IN_FLIGHT_FOR, prepared_publish_id="").count()
    limit = min(limit, PREPARE_IN_FLIGHT_MAX - in_flight)
    if limit <= 0:
        return []
    return _claim_by_turns(
        TO_PREPARE, due_by=now + ahead, limit=limit, updates={"prepare_claimed_at": now}, params={"now": now}
    )


def post_prepare(*, post_id: str) -> str:
    """Make the Instagram container(s) of a queued post before its time, so that Instagram has fetched and
    processed the media when the post is due and publishing is a single media_publish. Returns "prepared",
    "skipped" (no longer queued, already due or prepared, account not connected) or "unprepared" (the
    platform refused or failed: the publisher makes the container at the post's time and reports any error
    then, with the usual retries and codes).

    A dead token is the one error acted on now: the account goes reauth_required at once, so the partner
    hears of it (social_account.needs_reauth) while there is still time to reconnect before the post is due.
    "unprepared" as well on a worker whose clock is off from the database's (config/clock.py)."""
    post = ScheduledPost.objects.select_related("container", "social_account__identity").filter(pk=post_id).first()
    if (
        post is None
        or post.status != ScheduledPost.Status.QUEUED
        or post.due_at <= timezone.now()
        or post.prepared_publish_id
        or post.mode != ScheduledPost.Mode.PUBLISH
        # Anywhere else the same call is the post itself (TikTok's init): never before its time.
        or post.social_account.platform != "instagram"
        or post.social_account.status != SocialAccount.Status.CONNECTED
    ):
        return "skipped"
    if not clock.clock_trustworthy(refusing=f"preparing: post {post.pk}'s container not made ahead"):
        return "unprepared"  # its clock would judge whether the post is due yet (config/clock.py)
    account = post.social_account
    try:
        result = _platform_publish(post)
    except TokenInvalid as exc:
        social_account_mark_reauth_required(
            account_id=account.pk,
            reason=refusal_reason(f"preparing post {post.pk}", exc),
            source=f"post {post.pk}",
            expected_version=account.token_version,
        )
        return "unprepared"
    except PlatformError as exc:
        log.info("preparing %s failed (%s); its container will be made at its time", post.pk, exc.code or exc)
        return "unprepared"
    # Conditional: a post canceled or claimed meanwhile keeps what it has (the container goes unused).
    updated = ScheduledPost.objects.filter(
        pk=post.pk, status=ScheduledPost.Status.QUEUED, prepared_publish_id=""
    ).update(prepared_publish_id=result.publish_id)
    return "prepared" if updated else "skipped"


def _platform_publish(post: ScheduledPost, *, before_create: Callable[[], None] | None = None) -> PublishResult:
    """The platform call that makes the post from its container, on the account's token: the post itself,
    or on Instagram in mode publish its container (published later by media_publish)."""
    account, container = post.social_account, post.container
    kind = "video" if container.media_type == "video" else "image"
    return _client(account.platform).publish(
        access_token=account.access_token or "",
        platform_user_id=account.identity.platform_user_id,
        mode=post.mode,
        media_type=container.media_type,
        media=[MediaItem(url=url, kind=kind) for url in container.media_urls],
        caption=container.caption,
        before_create=before_create,
    )


def _prepared_publish_id(post: ScheduledPost) -> str:
    """The container made ahead for this post, if Instagram still has it: containers expire 24 h after they
    are made, and one prepared that long ago (a post held back for a day) is made again instead."""
    if not post.prepared_publish_id or post.prepare_claimed_at is None:
        return ""
    return post.prepared_publish_id if timezone.now() - post.prepare_claimed_at < PREPARED_USABLE_FOR else ""


# Why a platform error fails a post, by the platform's own code: TikTok's fail reasons and error codes,
# Instagram's error codes and subcodes (in an error's code "36003/2207009" or a failed container's status:
# the subcode, "2207052", or "Error: Media upload has failed with error code 2207052"). Instagram's media
# subcodes: 2207004 image too large, 2207005 format not supported, 2207009 aspect ratio not supported, 2207023
# unknown media type, 2207026 unsupported video, 2207052 media not fetchable from the URL, 2207057 thumbnail
# offset beyond the video; and the image error codes 36000 too large, 36001 format, 36003 aspect ratio.
# Not 36004 / 2207010 (the caption is too long): the content was refused, but not its media. Nor 2207003, a
# timeout downloading the media, which Meta says to try again (RETRYABLE_FAIL_CODES).
MEDIA_CODES = frozenset(
    {
        "file_format_check_failed",
        "video_pull_failed",
        "photo_pull_failed",
        "duration_check_failed",
        "frame_rate_check_failed",
        "picture_size_check_failed",
        "invalid_media",
        "url_ownership_unverified",
        "media_invalid",
        "2207004",
        "2207005",
        "2207009",
        "2207023",
        "2207026",
        "2207052",
        "2207057",
        "36000",
        "36001",
        "36003",
    }
)


# A cap on how much the creator (or the app) may post per day: nothing is wrong with the content, and the
# same post goes through once the day rolls over. Retrying within our backoff (minutes) cannot help, so the
# post fails at once, with the code that says "too many" rather than "refused".
DAILY_CAP_CODES = frozenset({"spam_risk_too_many_posts", "spam_risk_too_many_pending_share", "reached_active_user_cap"})


def _rejection_code(*reasons: str | None) -> str:
    """MEDIA_INVALID when any of the platform's codes or messages names a media problem (Instagram puts
    a failed container's subcode alone, "2207052", or inside a sentence, "…with error code 2207052");
    RATE_LIMITED for a daily cap; otherwise PLATFORM_REJECTED. Codes are matched as whole words: the
    platform's message now comes along, and a code must not be found inside a longer number or word."""
    words = set(re.findall(r"[a-z0-9_]+", " ".join(r for r in reasons if r).lower()))
    if words & MEDIA_CODES:
        return "MEDIA_INVALID"
    return "RATE_LIMITED" if words & DAILY_CAP_CODES else "PLATFORM_REJECTED"


def _client(platform: str):
    from accounts.platforms.clients import get_client

    return get_client(platform)


def _still_ours(post: ScheduledPost):
    """The post's row, if the run holding `post` (as it read it, with its own writes applied) may still write
    it. Every write of a publisher or resolver run goes through this. Two runs can work on one post at once:
    Celery redelivers a message (acks_late, reject_on_worker_lost, a broker's visibility timeout), a slow
    worker starts after its claim ran out and the post was claimed again, a resolve message arrives late.
    Checking `status` alone let such a run undo or settle what another had done: requeue a post another run
    had just posted (the next tick posted it again), or fail a post that was live.

    The row must still be at the point the run left it:
    - before the point of no return (nothing marked, no publish id): also still under the claim the run
      read (`claimed_until`, rewritten by every claim, is its token). Runs of one claim are alike here —
      nothing they did so far created anything — and whichever writes first wins: marking the point of no
      return, requeueing, failing, storing a prepared container's id;
    - past it, `publish_attempted_at` is the mark of the one run that made the creating call, and that run
      alone stores the id or fails the post; no other run can match it;
    - with the publish id known, any run may ask the platform (asking is safe to repeat) and write what it
      says, as long as it is about that publish id (not one a requeue dropped)."""
    rows = ScheduledPost.objects.filter(
        pk=post.pk,
        status=ScheduledPost.Status.PUBLISHING,
        publish_attempted_at=post.publish_attempted_at,
        publish_id=post.publish_id,
    )
    if not post.publish_attempted_at and not post.publish_id:
        rows = rows.filter(claimed_until=post.claimed_until)
    return rows


def _finish(post: ScheduledPost, *, event: str, answered: bool = True, rows: QuerySet | None = None, **changes) -> str:
    """publishing → the final state in `changes`, recording `event` and the attempt in the same transaction.
    Returns the outcome: the new status, or "skipped" when the post is no longer this run's (_still_ours).
    The event carries the row as it is now: the row in memory with the same changes applied, which is what a
    fresh read returns (the conditional update proves nobody else changed it meanwhile). `answered`: as _attempt.
    `rows`: the row as the caller must find it, when the caller is no publisher or resolver run (the hold after
    a restore, posts_hold_after_restore, which also ends queued posts); _still_ours(post) otherwise."""
    changes = {**changes, "claimed_until": None, "next_check_at": None}
    # Built before the changes apply: a failure that clears the publish id keeps it in the attempt.
    attempt = _attempt(
        post,
        ScheduledPostAttempt.Outcome(changes["status"]),
        error_code=changes.get("error_code", ""),
        message=changes.get("error_message", ""),
        answered=answered,
    )
    with transaction.atomic():
        updated = _update_recording(_still_ours(post) if rows is None else rows, attempt, **changes)
        if updated:
            for field, value in changes.items():
                setattr(post, field, value)
            event_record(organization_id=post.organization_id, type=event, data=scheduled_post_data(post))
    return str(changes["status"]) if updated else "skipped"


def _update_recording(rows, attempt: ScheduledPostAttempt, **changes) -> int:
    """`rows.update(**changes)` (a conditional update: the post as this run left it) and, if it matched, the
    attempt the run ends, in one transaction: a run that lost the post records nothing."""
    with transaction.atomic():
        updated = rows.update(**changes)
        if updated:
            attempt.save()
    return updated


def _requeue_recording(post: ScheduledPost, attempt: ScheduledPostAttempt, **changes) -> int | None:
    """publishing → queued (_update_recording of _still_ours(post) with `changes`), unless the post's account is
    disconnected: None then, nothing written, and the caller fails the post ACCOUNT_DISCONNECTED. A revoke cancels
    the account's queued posts and leaves a claimed one to its run; a run that put it back in the queue (its
    worker died, or the platform said "not now") left a queued post on a disconnected account, in the partner's
    queued list until a worker failed it. The account is read under its row lock, taken before the post's as the
    revoke takes them: a revoke committing first is seen here, and one that comes after waits for this commit
    and then finds the post queued, and cancels it."""
    with transaction.atomic():
        if _lock_account(post) == SocialAccount.Status.DISCONNECTED:
            return None
        return _update_recording(_still_ours(post), attempt, status=ScheduledPost.Status.QUEUED, **changes)


def _lock_account(post: ScheduledPost) -> str | None:
    """The post's account's status, read under the account's row lock (held to the caller's transaction's end).
    Taken by whatever may put a claimed post back in the queue (_requeue_recording, a managed deferral in
    _managed_enter) before the post's own lock, in the order the revoke takes them: a revoke that committed
    first is seen, and one that comes after waits and then cancels the post as queued."""
    return (
        SocialAccount.objects.select_for_update(of=("self",))
        .filter(pk=post.social_account_id)
        .values_list("status", flat=True)
        .first()
    )


def _retry_attempt(
    post: ScheduledPost, code: str, reason, backoff: timedelta, *, answered: bool = True
) -> ScheduledPostAttempt:
    # The attempt a "not now" ends (_retry_later, _publish_throttled): the platform's, unless `answered` is
    # False (Layers' own wait, which the "Platforms now" panel does not count).
    return _attempt(
        post,
        ScheduledPostAttempt.Outcome.RETRY,
        error_code=code,
        message=f"{reason} (next try in {backoff.total_seconds():.0f} s)",
        answered=answered,
    )


def _attempt(
    post: ScheduledPost, outcome: str, *, error_code: str = "", message: str = "", answered: bool = True
) -> ScheduledPostAttempt:
    """The attempt this run ends (not saved): saved by the caller in the transaction of the post's
    transition, once its conditional update matched, so that a run that lost the post records nothing.
    One insert per attempt, none on the claim: posts_claim_due's UPDATE already wrote `attempts` and `due_at`
    (when the attempt started), which the run read with the post. Not gathered for one insert per batch
    (posts_publish): inside the transition's transaction it is one statement with no commit of its own, and a
    worker dying between its transitions and a batch's insert would lose the rows of posts it had settled.

    `answered`: the platform's (or the provider's) answer ended the attempt, and it is recorded as theirs
    (`platform`, which "Platforms now" counts by). False when nothing of theirs did: the run stopped (its worker
    died or raised), Layers gave up on its own, or a check of ours ended it before any call. Such a failure is
    PLATFORM_UNAVAILABLE too at times, and a deploy killing workers must not read as the platform refusing.

    A post ended while it was not claimed (a queued post held after a restore: posts_hold_after_restore) was in
    no attempt: its row has no number and starts when it ends, as a staff retry's does."""
    now = timezone.now()
    claimed = post.status == ScheduledPost.Status.PUBLISHING
    return ScheduledPostAttempt(
        post_id=post.pk,
        number=post.attempts if claimed else None,
        started_at=post.due_at if claimed else now,
        finished_at=now,
        outcome=outcome,
        error_code=error_code,
        message=shorten(message, ATTEMPT_MESSAGE_LENGTH),
        publish_id=post.publish_id,
        platform=_answering(post) if answered else None,
    )


def _answering(post: ScheduledPost) -> str:
    """Who answers the post's publishing calls: "managed" (its project's provider) for a managed post, its
    account's platform otherwise. Read from the post as the run holds it (its account read with it)."""
    return "managed" if post.mode == ScheduledPost.Mode.MANAGED else post.social_account.platform


def _fail(
    post: ScheduledPost,
    code: str,
    message: str,
    *,
    created_nothing: bool = False,
    answered: bool = True,
    rows: QuerySet | None = None,
    **changes,
) -> str:
    """publishing → failed with an error, recording `scheduled_post.failed`: "failed", or "skipped".
    `created_nothing`: the platform holds nothing of the post (its calls were refused, or it dropped what it
    had): the marks of a call that reached it are cleared, so ops can retry it (post_retry) without checking.
    `answered=False`: no answer of the platform's ended it (_attempt). `rows` and further `changes`: as
    _finish (the hold after a restore)."""
    forget = {"publish_id": "", "publish_attempted_at": None} if created_nothing else {}
    return _finish(
        post,
        event="scheduled_post.failed",
        answered=answered,
        rows=rows,
        status=ScheduledPost.Status.FAILED,
        error_code=code,
        error_message=shorten(message, MESSAGE_LENGTH),
        **forget,
        **changes,
    )


def _token_refused(post: ScheduledPost, token_version: int, exc: TokenInvalid, message: str) -> str:
    """The platform refused the token of a call that created nothing: fail CREDENTIAL_INVALID if the token is
    dead (accounts.services.social_account_token_rejected), otherwise try the post again shortly. A refusal
    for the scope of the post's mode alone, on a grant that posts in another mode, fails only this post."""
    if isinstance(exc, PermissionMissing) and (scope := _mode_scope_refused(post, token_version)):
        return _fail(
            post,
            "PLATFORM_REJECTED",
            f"The platform refused the post: the account's grant lacks {scope}, which posts in mode {post.mode} "
            f"need ({exc.code or 'permission missing'}). The account's other posts are not affected; a reauth "
            f"granting {scope} lets it post in mode {post.mode} again.",
            created_nothing=True,
        )
    try:
        dead = social_account_token_rejected(
            account_id=post.social_account_id,
            token_version=token_version,
            reason=refusal_reason(f"publishing post {post.pk}", exc),
            source=f"post {post.pk}",
        )
    except PlatformError as refresh_error:
        return _retry_later(post, refresh_error)
    if dead:
        return _fail(post, "CREDENTIAL_INVALID", message, created_nothing=True)
    renewed = PlatformUnavailable(f"the account's token is being renewed ({exc.code or 'token refused'})")
    # Not the platform being down: it refused a token Layers is renewing (the panel must not read an outage).
    return _retry_later(post, renewed, answered=False)


def _mode_scope_refused(post: ScheduledPost, token_version: int) -> str | None:
    """The scope of the post's mode (scopes.MODE_SCOPES: TikTok's video.publish or video.upload) when the
    platform refused it for a missing permission and the account's grant, still the one the call used
    (`token_version`), is known to lack that scope and to hold another publishing scope: the token is alive
    and posts in the other mode (a post queued before a reauth that asked for video.upload only). Taking it
    for a dead token would send the account to reauth_required and fail every queued post of it, those the
    grant can post too. None otherwise, and the refusal is handled as any refused token: the grant's scopes
    unknown, a single publishing scope (Instagram's), a newer token, or a grant we were told holds the scope
    (the customer withdrew permissions at the platform since: what is left of the grant is not known)."""
    platform = post.social_account.platform
    if scope_for_mode(platform, post.mode) is None:
        return None
    scopes = (
        SocialAccount.objects.filter(pk=post.social_account_id, token_version=token_version)
        .values_list("scopes", flat=True)
        .first()
    )
    if scopes is None:
        return None
    granted = set(stored_scopes(scopes))
    missing = grant_lacks_mode(platform, post.mode, granted)
    return missing if missing and granted & PUBLISHING[platform] else None


def _fail_token_dead(post: ScheduledPost, token_version: int, message: str) -> str:
    """The platform refused the account's token: the post fails CREDENTIAL_INVALID and the account needs a
    reauth (unless its token changed since `token_version` was read: a reauth that just succeeded wins)."""
    outcome = _fail(post, "CREDENTIAL_INVALID", message)
    social_account_mark_reauth_required(
        account_id=post.social_account_id,
        reason=f"Post {post.pk}: {message}",
        source=f"post {post.pk}",
        expected_version=token_version,
    )
    return outcome


def _published(post: ScheduledPost, *, external_id: str | None, external_url: str | None) -> str:
    return _finish(
        post,
        event="scheduled_post.published",
        status=ScheduledPost.Status.PUBLISHED,
        published_at=timezone.now(),
        external_id=external_id or "",
        external_url=external_url or "",
        error_code="",
        error_message="",
    )


def _backoff(attempts: int, retry_after: float | None) -> timedelta:
    """How long to wait after the `attempts`-th attempt was refused for now: 30 s doubling per attempt up to
    5 minutes, or longer if the platform asked (Retry-After). A shorter Retry-After is not taken: during an
    outage it would have every post ask again every few seconds."""
    # The exponent is capped first: 30 s × 2**42 overflows a timedelta, and a long window reaches that many.
    ours = min(RETRY_BACKOFF_FIRST * 2 ** min(max(attempts - 1, 0), 10), RETRY_BACKOFF_MAX)
    return max(ours, timedelta(seconds=retry_after or 0))


def _platform_attempts(post: ScheduledPost) -> int:
    """The post's attempts that reached the platform (or its provider): what its backoff grows with and its
    "gave up after N attempts" counts. `attempts` counts every claim, and a claim whose run stopped before the
    platform call (a worker killed in a deploy) was queued again by the resolver and counted in `requeues`
    instead: such runs are not the platform's refusals."""
    return max(post.attempts - post.requeues, 0)


def _retry_window_start(post: ScheduledPost) -> datetime:
    """When the post's retry window (settings.LAYERS_PUBLISH_RETRY_WINDOW) started: its time, or its first
    try since it was queued when that came later — workers behind, or an ops retry (post_retry), which
    numbers the attempts from 1 again: a post retried the next day must not fail at its first refusal. The
    current attempt started at `due_at` (the claim wrote it); an earlier first one is in the attempt log."""
    first = post.due_at
    if post.attempts > 1:
        logged = (
            ScheduledPostAttempt.objects.filter(post_id=post.pk, number=1)
            .order_by("-id")
            .values_list("started_at", flat=True)
            .first()
        )
        first = logged or first  # none: posts older than the attempt log
    return max(post.scheduled_for, first)


def _minutes(wait: timedelta) -> str:
    n = int(wait.total_seconds() // 60)
    return f"{n} minute{'' if n == 1 else 's'}"


def _given_up(post: ScheduledPost, backoff: timedelta, retry_after: float | None, reason) -> str | None:
    """None while the post's next try, `backoff` from now, still falls within its retry window. Otherwise
    the failure's message: how many attempts over how long, the window, and the platform's last words."""
    now, window = timezone.now(), settings.LAYERS_PUBLISH_RETRY_WINDOW
    started = _retry_window_start(post)
    if now + backoff <= started + window:
        return None
    tried = _platform_attempts(post)
    why = f"retry window: {_minutes(window)}"
    if retry_after and timedelta(seconds=retry_after) >= backoff:
        why += f"; the platform asked to wait {_minutes(timedelta(seconds=retry_after))}"
    attempts = f"{tried} attempt{'' if tried == 1 else 's'}"
    return f"Gave up after {attempts} over {_minutes(max(now - started, timedelta(0)))} ({why}): {reason}"


def _retry_later(post: ScheduledPost, exc: PlatformError, *, answered: bool = True) -> str:
    """A transient error before the platform accepted anything (or after it dropped what it had accepted:
    TikTok's FAILED `internal`, an Instagram container that failed on Instagram's side): back to the queue
    with backoff (the dispatcher's tick claims it again when it is due, as any post), or fail with
    RATE_LIMITED / PLATFORM_UNAVAILABLE once the next try would fall past the post's retry window.
    `answered` False: the wait is Layers' own, not the platform saying "not now" (see _attempt)."""
    code = "RATE_LIMITED" if isinstance(exc, RateLimited) else "PLATFORM_UNAVAILABLE"
    backoff = _backoff(_platform_attempts(post), exc.retry_after)
    given_up = _given_up(post, backoff, exc.retry_after, exc)
    if given_up:
        return _fail(post, code, given_up, created_nothing=True, answered=answered)
    # Only if still this run's: a duplicate run whose call failed before its point of no return must not
    # requeue (and clear the mark of) a post another run has just sent to the platform.
    updated = _requeue_recording(
        post,
        _retry_attempt(post, code, exc, backoff, answered=answered),
        due_at=timezone.now() + backoff,
        publish_attempted_at=None,
        publish_id="",  # a publish id the platform dropped: the next attempt asks for a new one
        # The same for a container made ahead (post_prepare): it may be the one that failed, and it would
        # otherwise be polled again at every attempt. The preparer may make a new one before the retry.
        prepared_publish_id="",
        prepare_claimed_at=None,
        claimed_until=None,
        next_check_at=None,
        error_code=code,
        error_message=shorten(f"Retrying: {exc}", MESSAGE_LENGTH),
    )
    if updated is None:
        return _fail(
            post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", created_nothing=True, answered=False
        )
    return "retrying" if updated else "skipped"


class _LostClaim(Exception):
    """Another run already reached the point of no return for this post, or it is no longer under the claim
    this run read (requeued or claimed again meanwhile)."""


class _AccountGone(Exception):
    """The post's account was disconnected (revoked, or its lease released) after the post was claimed."""


def _unless_account_gone(post: ScheduledPost, act: Callable[[QuerySet], int | bool]) -> None:
    """`act` on the post's row while it is this run's (_still_ours) and its account is not disconnected, both
    read in the database in act's own statement: raises _AccountGone if the account is disconnected, _LostClaim
    if the row is no longer this run's. Run right before whatever makes the post exist: TikTok's init or
    Instagram's draft delivery (the point of no return), the call to a managed provider, Instagram's
    media_publish of a container.

    The account read with the post is not enough: a dispatcher's batch (posts_publish) reads all its posts at
    once, and a revoke or lease release committing before a post's turn cancels only the queued posts.
    Nothing else stops this one: a released leased account's token goes back to Layers' pool (it is not
    revoked at TikTok), a managed provider uses no token of ours, and Instagram keeps the grant of a user
    still connected elsewhere (README), or when the revoke there failed (it is best-effort)."""
    claimed = _still_ours(post)
    # The account is read in a correlated EXISTS, not through a join: an UPDATE with a join becomes "WHERE id
    # IN (a subquery)", and a second run waiting on the first run's row lock then had only the id re-checked on
    # the row the first run committed, not its mark: both runs passed the point of no return, and the post
    # was made twice. Without the join, the whole condition is re-checked on the committed row.
    gone = SocialAccount.objects.filter(pk=OuterRef("social_account_id"), status=SocialAccount.Status.DISCONNECTED)
    if not act(claimed.exclude(Exists(gone))):
        raise _AccountGone() if claimed.exists() else _LostClaim()


def _account_still_there(post: ScheduledPost) -> bool:
    """Right before Instagram's media_publish in a status read (_resolve): whether the post's account is still
    not disconnected, read in the database (_unless_account_gone). The account read with the post may be older
    than a revoke that kept the grant, whose token still publishes. Raises _LostClaim if the row is no longer
    about this publish id."""
    try:
        _unless_account_gone(post, lambda rows: rows.exists())
    except _AccountGone:
        return False
    return True


def _publishing_posts(post_ids: list[str]) -> dict[str, ScheduledPost]:
    """The posts with everything publishing needs, in one query, plus one for their accounts' layers
    (`account_layers`: how many of the account's onboarding layers exist)."""
    posts = {
        post.pk: post
        for post in ScheduledPost.objects.select_related("container", "social_account__identity").filter(
            pk__in=post_ids
        )
    }
    layer_counts = dict(
        Layer.objects.filter(
            social_account_id__in={post.social_account_id for post in posts.values()}, kind__in=ACCOUNT_LAYER_KINDS
        )
        .order_by()
        .values("social_account_id")
        .annotate(n=Count("pk"))
        .values_list("social_account_id", "n")
    )
    for post in posts.values():
        post.account_layers = layer_counts.get(post.social_account_id, 0)
    return posts


def post_publish(*, post_id: str) -> str:
    """Publish one claimed post. Returns the outcome: "published", "processing", "failed", "retrying",
    "deferred" (a managed post waiting for its provider's slot), "skipped", or, from a worker whose clock is off
    (_give_back_for_the_clock), "given back" (queued again) or "left to the resolver" (its account was
    revoked). Safe to call twice, and beside another run on the same post: a post that is not
    `publishing`, or whose creating call another run has made, is skipped — that run settles it, or the
    resolver does (post_resolve) — and every write is conditional on the post still being this run's
    (_still_ours), so it is never posted again, requeued under the run that posted it, or failed while live.

    Database work per post: the read, the two writes that make it at-most-once (the point of no return,
    then the platform's publish id; an Instagram container has no point of no return, its account is read
    again instead) and the final transition with its event."""
    return _publish(_publishing_posts([post_id]).get(post_id))


def posts_publish(*, post_ids: list[str]) -> dict[str, str]:
    """post_publish for several claimed posts (a share of one dispatcher claim), one after the other, read
    together. A post whose publish raised is reported as "error" and left `publishing`: the resolver takes it
    over once its claim expires, and the others are not held up by it.

    The rows are read once for the whole list, so the last post's account is as it was a few publishes
    earlier. The conditional updates keep the post itself exact, and its account is read again in the
    database right before the call that makes the post exist (_unless_account_gone): a post of the list whose
    account was revoked or released meanwhile fails ACCOUNT_DISCONNECTED instead of being published."""
    posts = _publishing_posts(post_ids)
    outcomes = {}
    for post_id in post_ids:
        try:
            outcomes[post_id] = _publish(posts.get(post_id))
        except Exception:
            log.exception("publishing %s raised; the resolver will settle it", post_id)
            outcomes[post_id] = "error"
            drop_broken_connection()  # the next posts of the list get a fresh connection if this one died
    return outcomes


def _publish(post: ScheduledPost | None) -> str:
    if post is None or post.status != ScheduledPost.Status.PUBLISHING:
        return "skipped"
    if post.publish_id or post.publish_attempted_at:
        # Another run is past the point of no return: a redelivered message, or this one arriving late. It
        # may be in its creating call right now, so the post is not settled from here (that failed live
        # posts as "outcome unknown"): that run settles it, or the resolver once it can no longer be alive.
        return "skipped"
    if not clock.clock_trustworthy(refusing=f"publishing: post {post.pk} given back before any platform call"):
        return _give_back_for_the_clock(post)
    account = post.social_account
    if account.status == SocialAccount.Status.DISCONNECTED:
        return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
    if account.status == SocialAccount.Status.REAUTH_REQUIRED:
        return _fail(post, "CREDENTIAL_INVALID", NEEDS_REAUTH, answered=False)
    if post.account_layers < len(ACCOUNT_LAYER_KINDS):
        layers_provision_for_account(account=account)
    if post.mode == ScheduledPost.Mode.MANAGED:
        return _dispatch_managed(post)

    prepared = _prepared_publish_id(post)
    if prepared:
        # The container exists already (post_prepare): what is left is media_publish, in _resolve below.
        return _publish_known_id(post, prepared)

    try:
        # An access token that expired while the health check was behind is refreshed now, not sent.
        account = post.social_account = social_account_with_fresh_token(account=account, source=f"post {post.pk}")
    except PlatformError as exc:
        return _retry_later(post, exc)  # the refresh failed for now: the post waits, the account stays
    if account.status == SocialAccount.Status.REAUTH_REQUIRED:
        return _fail(post, "CREDENTIAL_INVALID", EXPIRED_UNREFRESHABLE)
    version = account.token_version
    intent = {"marked": False}

    def mark_point_of_no_return():
        # Recorded (committed) right before the request that creates the post, so that a worker dying
        # during that request is recognised afterwards and the post is never sent a second time.
        now = timezone.now()
        # Taken by one run only: the first to mark (still under the claim it read) makes the call; a duplicate
        # run gets _LostClaim, and from now on this mark is what makes a write this run's (_still_ours).
        # Not if the account was revoked or released since the batch was read (_AccountGone).
        _unless_account_gone(post, lambda rows: rows.update(publish_attempted_at=now))
        post.publish_attempted_at = now
        intent["marked"] = True

    try:
        result = _platform_publish(post, before_create=mark_point_of_no_return)
    except _LostClaim:
        return "skipped"
    except _AccountGone:
        return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
    except TokenInvalid as exc:
        # Refused before anything was created. Dead, or only old: a refresh underway (or one more attempt,
        # for a token past its expiry) may have renewed it, and the post then goes out on the new token.
        refused = "The platform rejected the account's token; it needs a reauth."
        return _token_refused(post, version, exc, PERMISSION_MISSING if isinstance(exc, PermissionMissing) else refused)
    except RequestRejected as exc:
        # The platform's own words (its message names what to fix: "aspect ratio ('0.3')"); the clients
        # build it from the platform's error with the request's token and the app secret redacted.
        return _fail(post, _rejection_code(exc.code, str(exc)), f"The platform refused the post: {exc}")
    except (RateLimited, PlatformUnavailable) as exc:
        if intent["marked"] and exc.outcome_unknown:
            # The request that creates the post went out and no clear answer came back (none in time, a
            # dropped connection, a body cut short, a gateway's error page): the platform may have the post.
            # Posting again could post twice, so stop and say so; ops or the partner can retry. A request that
            # never left (connection refused) or the platform's own typed error (it refused) is retried.
            return _fail(
                post,
                "PLATFORM_UNAVAILABLE",
                f"The platform's answer to the publish request was lost or unreadable ({exc.code or 'no answer'}); "
                "not retried automatically so that the post cannot appear twice.",
            )
        return _retry_later(post, exc)
    return _publish_known_id(post, result.publish_id)


def _give_back_for_the_clock(post: ScheduledPost) -> str:
    """This worker's clock is off from the database's (config/clock.py): the post goes back to the queue before
    any call of its run, due as the claim left it (that time is the claiming tick's, not this clock's), and the
    next tick hands it out again, until a worker whose clock is right takes it. Sent from here, its point of
    no return would be written with this clock: a worker 5 minutes behind wrote a mark that a healthy resolver
    read as a dead run's, and failed the post as it went live. The claim is no attempt: `attempts` is put back
    (as a deferred managed post's, _managed_enter) and no lost run is counted (`requeues`, of which 5 fail the
    post), so however many of a post's claims land here, none counts against it. The attempt log says so in a
    row that is no attempt (no number, no platform), finished at the database's time. "given back", "left to
    the resolver" when the account was revoked (see below), or "skipped" when the post is no longer this run's
    (_still_ours)."""
    why = f"Given back before any platform call, for a worker whose clock is right: {clock.skew_problem()}."
    given_back = ScheduledPostAttempt(
        post_id=post.pk,
        number=None,
        started_at=post.due_at,
        finished_at=Now(),
        outcome=ScheduledPostAttempt.Outcome.REQUEUED,
        message=shorten(why, ATTEMPT_MESSAGE_LENGTH),
    )
    updated = _requeue_recording(post, given_back, attempts=F("attempts") - 1, claimed_until=None, next_check_at=None)
    if updated is None:
        # The account was revoked: not queued again (the revoke promised its queued posts canceled), and not
        # failed from here either: a failure writes this clock's time (its attempt's end, its event). The
        # post stays claimed, with nothing written; once the claim runs out, a healthy tick's resolver puts
        # it back through _requeue_recording, which fails it ACCOUNT_DISCONNECTED.
        return "left to the resolver"
    return "given back" if updated else "skipped"


def _publish_known_id(post: ScheduledPost, publish_id: str) -> str:
    """Store the platform's publish id, then settle the post right away (_resolve: Instagram's
    media_publish, or a first status check)."""
    if not post.publish_attempted_at:
        # No creating call was made (none marked): the id is an Instagram container, made just now or ahead
        # (post_prepare), and the post exists only once media_publish in _resolve publishes it. The account is
        # read again first, as at a point of no return: the batch read it before any revoke since.
        try:
            _unless_account_gone(post, lambda rows: rows.exists())
        except _LostClaim:
            return "skipped"
        except _AccountGone:
            return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
    next_check_at = timezone.now() + STATUS_POLL_FIRST
    if not _store_publish_id(post, publish_id=publish_id, next_check_at=next_check_at):
        return "skipped"  # no longer ours (_still_ours): whoever changed it settles the post
    post.publish_id, post.next_check_at = publish_id, next_check_at
    return _resolve(post)


def drop_broken_connection() -> None:
    """After an error outside any transaction: close the database connection if the server dropped it
    (restart, failover, a killed backend), so that the next query opens a fresh one instead of failing."""
    if not connection.in_atomic_block and connection.connection is not None and not connection.is_usable():
        connection.close()


def _store_publish_id(post: ScheduledPost, *, publish_id: str, next_check_at: datetime) -> int:
    """Record the platform's publish id. The platform already has the post and this worker alone holds its
    id, so a database connection dropped meanwhile must not lose it (config/dbreconnect.py). Without the id
    the resolver could only fail the post (outcome unknown). Conditional on the post still being this run's
    (_still_ours)."""
    # The first write committed if the row has this id under this run's mark; the condition of a second
    # write (no id yet) would no longer match it.
    written = copy.copy(post)
    written.publish_id = publish_id
    return write_again_after_a_dropped_connection(
        lambda: _still_ours(post).update(publish_id=publish_id, next_check_at=next_check_at),
        landed=lambda: _still_ours(written).exists(),
        landed_result=1,
        what=f"storing the publish id of {post.pk}",
    )


# A failed post's reason (PublishStatus.fail_code: the platform's own code, never its human text) when it
# is not about the content. TikTok's `auth_removed`: the creator removed the app, so the token is dead.
# TikTok's `internal` (retryable, PLATFORMS.md): TikTok did not create the post, so it is queued again.
# Instagram's containers that failed on its side, which Meta says to try again with a new container: 2207001
# (server error), 2207003 (a timeout downloading the media), 2207032 (creating the media failed) and 2207053
# (unknown upload error). Queued again as well: the retry makes a new container (_retry_later drops the
# failed one, prepared ahead or not).
TOKEN_GONE_FAIL_CODES = frozenset({"auth_removed"})
RETRYABLE_FAIL_CODES = frozenset({"internal", "2207001", "2207003", "2207032", "2207053"})
# Instagram's EXPIRED: the container was not published within 24 h (we were throttled or the platform kept
# failing). Nothing was wrong with the content.
UNAVAILABLE_FAIL_CODES = frozenset({"EXPIRED"})


def post_resolve(*, post_id: str, claim: str | None = None) -> str:
    """Settle a `publishing` post by asking the platform about it, never by posting again:
    - publish_id known → poll its status (published / still processing / failed);
    - the request that creates the post was sent but no id was stored (worker died mid-call) → fail with
      PLATFORM_UNAVAILABLE rather than risk a second post (TikTok's init and Instagram's draft delivery take
      no idempotency key) — but only once the run that sent it can no longer be alive (CLAIM_LEASE after its
      mark): until then it may still store the id and settle the post itself;
    - that request never went out (worker died before it, or only an Instagram container — not yet a post —
      was made) → queue again: exactly one post will result. Managed dispatches are queued again as well:
      the provider deduplicates on our Idempotency-Key. After MAX_LOST_RUNS runs stopped that way the post
      fails PLATFORM_UNAVAILABLE instead (a run that raises every time must not loop).

    Nothing of this on a worker whose clock is off from the database's (config/clock.py): it would read the
    lease of a worker in its creating call as run out, and fail a post going live. The check of a post with
    its publish id (asking the platform, safe to repeat) is put back due at the time of the claim that sent
    it here, and the next tick hands it out again; a post without one (is its run dead?) waits for the
    resolver's lease to run out, as after any resolve that did not happen.

    `claim`: the claim that handed the post out (posts_claim_checks). A message that waited in the broker past
    its lease finds the post claimed again (another message is on its way) or already settled by another run:
    "skipped", asking the platform nothing. It used to ask again, one status call per stale duplicate (TikTok
    allows 30 a minute per token) while the workers were behind. A message without one (from the previous
    release, or a caller settling the post at once, as dispatch_posts) is run as before."""
    post = ScheduledPost.objects.select_related("container", "social_account__identity").filter(pk=post_id).first()
    if post is None or post.status != ScheduledPost.Status.PUBLISHING:
        return "skipped"
    if claim is not None and post.claimed_until != datetime.fromisoformat(claim):
        return "skipped"  # a stale message: the claim that holds the post now has a message of its own
    if not clock.clock_trustworthy(refusing=f"checking: post {post.pk} left to a worker whose clock is right"):
        if post.publish_id and post.next_check_at is not None:
            # The resolver's claim wrote next_check_at = its time + CLAIM_LEASE (posts_claim_for_resolution).
            ScheduledPost.objects.filter(
                pk=post.pk,
                status=ScheduledPost.Status.PUBLISHING,
                publish_id=post.publish_id,
                next_check_at=post.next_check_at,
            ).update(next_check_at=post.next_check_at - CLAIM_LEASE)
        return "given back"
    return _resolve(post)


def _resolve(post: ScheduledPost) -> str:
    """post_resolve on a post already read (with its container, account and identity)."""
    account = post.social_account
    now = timezone.now()
    if not post.publish_id:
        if post.publish_attempted_at and now - post.publish_attempted_at < CLAIM_LEASE:
            # The run that made the creating call may be in it still: this is a resolve message redelivered or
            # late (a redelivery carries the claim it had, so it cannot tell), or that worker started late in its
            # claim. Failing now would report a post that is about to be live as failed, and refuse its id.
            # Nothing is written: the resolver looks again when the post's check is due (a resolver's claim, from
            # now, outlasts it).
            return "skipped"
        if post.publish_attempted_at:
            return _fail(
                post,
                "PLATFORM_UNAVAILABLE",
                "The worker stopped while the platform was being called; the outcome is unknown, so the post is "
                "not sent again automatically.",
                answered=False,
            )
        if post.requeues + 1 >= MAX_LOST_RUNS and account.status == SocialAccount.Status.DISCONNECTED:
            # Revoked meanwhile: the account being gone is the answer a partner can act on (and the one the
            # requeue below gives a run earlier); the lost runs' PLATFORM_UNAVAILABLE says "try again later".
            # Read without the account's lock: a revoke not committed yet leaves it to the lost-runs limit.
            return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
        if post.requeues + 1 >= MAX_LOST_RUNS:
            # A run that raised (a database error, a bug) or died the same way every time would otherwise be
            # queued again at every expiry forever: a managed post sent to its provider each time, a platform
            # refresh repeated each time. Counted apart from the platform's own rate limits and outages
            # (_platform_attempts, retried for a window of time): one worker lost in a deploy during those
            # must not fail the post.
            return _fail(
                post,
                "PLATFORM_UNAVAILABLE",
                f"Gave up after {post.requeues + 1} runs that each stopped (the worker died or raised) before "
                "the post reached the platform.",
                answered=False,
            )
        stopped = _attempt(
            post,
            ScheduledPostAttempt.Outcome.REQUEUED,
            message="The run stopped (its worker died or raised) before the post reached the platform; queued again.",
            answered=False,
        )
        updated = _requeue_recording(
            post,
            stopped,
            requeues=F("requeues") + 1,
            due_at=now,
            publish_attempted_at=None,
            claimed_until=None,
            next_check_at=None,
        )
        if updated is None:
            return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
        return "requeued" if updated else "skipped"
    disconnected = account.status == SocialAccount.Status.DISCONNECTED
    token = account.access_token
    if disconnected:
        # Revoked or released after the platform had the post. Its own token is wiped (polling with it would
        # read as a dead token: CREDENTIAL_INVALID, which means "reauth"). When another holder of the same
        # platform user kept the app's grant alive (another binding in any project or organization, a lease,
        # Layers' pool: a released lease's token went back there), the platform goes on with the post, and
        # that holder's token tells how it ended: "failed" here would have the partner post it a second time.
        # Only read with it (publish=False): an Instagram container not published yet is no post, and must
        # not become one after the revoke. No holder left (the revoke withdrew the grant): nothing can tell.
        token = platform_user_token_kept(account=account)
        if not token and platform_user_token_renewing(account=account):
            # A holder kept the grant, but its token has expired for now (its renewal fell behind): the grant is
            # alive and the platform goes on with the post, so "failed" would have the partner post it again.
            # Asked again once the renewal has caught up; the post's processing limit still ends the wait.
            return _check_again(post, now)
    else:
        needed_reauth = account.status == SocialAccount.Status.REAUTH_REQUIRED
        try:
            # As for the publish: an access token that expired meanwhile is refreshed before the poll.
            account = post.social_account = social_account_with_fresh_token(account=account, source=f"post {post.pk}")
        except PlatformError as exc:
            # Refused or failing for now (a refresh token the platform refuses as dead is not raised: the
            # account is reauth_required, below). Nothing was asked about the post: kept and quoted as a
            # refused status read is, or a day of these ended "did not finish processing", saying nothing.
            return _check_again(post, now, refused=exc, refused_step=REFRESH_BEFORE_CHECK)
        if account.status == SocialAccount.Status.REAUTH_REQUIRED:
            # Found so before this read (the health check, the creator removing the app), or made so by the
            # refresh just refused: say which, as the publisher does.
            return _fail_credential_after_send(post, NEEDS_REAUTH if needed_reauth else EXPIRED_UNREFRESHABLE)
        token = account.access_token
    try:
        if disconnected and not token:
            raise TokenInvalid("no token left to ask the platform with")
        status = _client(account.platform).publish_status(
            access_token=token or "",
            platform_user_id=account.identity.platform_user_id,
            publish_id=post.publish_id,
            caption=post.container.caption,
            not_before=post.created_at,
            publish=False if disconnected else lambda: _account_still_there(post),
        )
    except TokenInvalid as exc:
        if disconnected:
            if _disconnected_moments_ago(account.pk, now):
                # No token can ask (the revoke withdrew the grant), but another run of this post may be in
                # Instagram's media_publish, sent before the revoke: it settles the post itself if so.
                return _check_again(post, now)
            return _fail(
                post, "ACCOUNT_DISCONNECTED", "The account was disconnected while the platform processed the post."
            )
        try:
            dead = social_account_token_rejected(
                account_id=account.pk,
                token_version=account.token_version,
                reason=refusal_reason(f"reading how post {post.pk} stands", exc),
                source=f"post {post.pk}",
            )
        except PlatformError:
            dead = False
        if not dead:
            return _check_again(post, now)  # renewed (or being renewed): asked again on the new token
        if isinstance(exc, PermissionMissing):
            return _fail_credential_after_send(post, PERMISSION_MISSING)
        return _fail_credential_after_send(post, "The platform rejected the account's token; it needs a reauth.")
    except (RateLimited, PlatformUnavailable, RequestRejected) as exc:
        # The platform refused to say how the post stands (an outage, a throttle, or its own refusal of the
        # read): nothing is known about the post, so it is asked again. The refusal is kept on the post for
        # ops and quoted if the day runs out (_check_again).
        return _check_again(post, now, refused=exc)
    except _LostClaim:
        return "skipped"  # no longer about this publish id: whoever changed it settles the post
    if status.state in ("published", "sent_to_inbox"):
        return _published_as_answered(post, status)
    if status.state == "unpublished":
        if _disconnected_moments_ago(account.pk, now):
            # Another run of this post may have passed its account check just before the revoke and be in
            # media_publish now (the grant kept elsewhere, its token still publishes): failing the post here
            # would report it failed as it goes live.
            return _check_again(post, now)
        return _fail(
            post, "ACCOUNT_DISCONNECTED", "The account was disconnected before the platform published the post."
        )
    if status.state == "failed":
        reason = status.fail_reason or status.fail_code
        if status.fail_code in TOKEN_GONE_FAIL_CODES:
            return _fail_token_dead(
                post, account.token_version, f"The platform could not publish the post: {_with_code(status)}"
            )
        if status.fail_code in RETRYABLE_FAIL_CODES:
            dropped = f"the platform dropped the post ({status.fail_code}): {reason}"
            return _retry_later(post, PlatformUnavailable(dropped, code=status.fail_code or ""))
        if status.fail_code in UNAVAILABLE_FAIL_CODES:
            code = "PLATFORM_UNAVAILABLE"
        else:
            code = _rejection_code(status.fail_code or status.fail_reason)
        return _fail(post, code, f"The platform could not publish the post: {_with_code(status)}")
    if status.state in ("throttled", "try_again"):
        return _publish_throttled(post, status, now)
    return _check_again(post, now, answered=True)


def _fail_credential_after_send(post: ScheduledPost, message: str) -> str:
    """CREDENTIAL_INVALID for a post being settled (_resolve): the account's token is dead, so how the post
    ended cannot be read. If the request that creates it had gone out, the platform may have published it: the
    message says so (MAY_BE_LIVE). An Instagram container not yet published (no such request) is no post."""
    return _fail(post, "CREDENTIAL_INVALID", message + (MAY_BE_LIVE if post.publish_attempted_at else ""))


def _published_as_answered(post: ScheduledPost, status: PublishStatus) -> str:
    """The post is live (or in the creator's inbox): published, with the id and URL the platform gave where
    they can be stored and handed on (_storable_outcome). Should the database still refuse to store them (a
    value no check here foresaw: DataError), the post is published without them, with a warning: the platform
    did publish it, and raising here left it `publishing` for ever (the resolver claimed it at every lease,
    asked the platform, and was refused the same write again; the day's give-up was never reached)."""
    platform = _answering(post)
    external_id, external_url = _storable_outcome(
        post, status.external_id or "", status.external_url or "", source=platform
    )
    as_read = copy.copy(post)  # _finish sets the changes on the post before its event is written
    try:
        return _published(post, external_id=external_id, external_url=external_url)
    except DataError as exc:
        log.warning(
            "%s published %s, but its id or URL could not be stored (%s): published without them",
            platform,
            post.pk,
            exc.__class__.__name__,
        )
    return _published(as_read, external_id="", external_url="")


def _with_code(status: PublishStatus) -> str:
    """The platform's words about a post it failed, with its own code: "TikTok refused the caption.
    (spam_risk_text)". The clients turn a code into a sentence where they know one, and the code is what the
    partner, support and the platform's documentation go by (the refusals raised by a call carry it already:
    "tiktok spam_risk_text: …"). Not repeated where the words name it ("…with error code 2207052")."""
    words, code = status.fail_reason or status.fail_code or "no reason given", status.fail_code
    if code and not re.search(rf"(?<!\w){re.escape(code)}(?!\w)", words):
        return f"{words} ({code})"
    return words


def _publish_throttled(post: ScheduledPost, status: PublishStatus, now: datetime) -> str:
    """The call that makes the post public was throttled (Instagram's media_publish; its container waits), or
    failed for now on the platform's side ("try_again": Instagram's 2207008, Graph's codes 1 and 2, an error
    Meta marks `is_transient`): each such call is an attempt,
    asked again after the same backoff as _retry_later, and the post fails RATE_LIMITED (PLATFORM_UNAVAILABLE)
    once the next call would fall past its retry window. Instagram's 24 h quota is rolling: a slot frees as a
    post of the day before ages out, so asking again for the window can still publish it, at one media_publish
    per 5 minutes at most. Not _check_again: that would call media_publish on every poll until the container
    expired, a day of publishing actions, and then say the status checks were refused."""
    code = "RATE_LIMITED" if status.state == "throttled" else "PLATFORM_UNAVAILABLE"
    backoff = _backoff(_platform_attempts(post), status.retry_after)
    given_up = _given_up(post, backoff, status.retry_after, status.fail_reason)
    if given_up:
        return _fail(post, code, given_up)
    # attempts as read: two runs throttled on the same check count one attempt.
    updated = _update_recording(
        _still_ours(post).filter(attempts=post.attempts),
        _retry_attempt(post, code, status.fail_reason, backoff),
        attempts=F("attempts") + 1,
        next_check_at=now + backoff,
        claimed_until=None,
        error_code=code,
        error_message=shorten(f"Retrying: {status.fail_reason}", MESSAGE_LENGTH),
    )
    return "retrying" if updated else "skipped"


def _disconnected_moments_ago(account_id: str, now: datetime) -> bool:
    """Whether the account was disconnected less than CLAIM_LEASE ago: a call another run of the post made
    before that (its account check passed just before the revoke), Instagram's media_publish say, may still be
    under way, and such a call has ended within a claim's lease. A resolver failing the post meanwhile would
    report it failed as it goes live (that run can no longer settle it: the row is no longer as it left it)."""
    gone_at = SocialAccount.objects.filter(pk=account_id).values_list("disconnected_at", flat=True).first()
    return gone_at is not None and now - gone_at < CLAIM_LEASE


# Prefix of a publishing post's error_message while the platform refuses to read its status, as "Retrying: "
# marks a queued post's transient error. Never shown by the API (serializers.post_error: failed posts only).
CHECK_REFUSED = "Checking: "
# What the kept note names when the platform refused not the status read but the refresh of the account's
# expired token that comes before it ("Checking: token refresh: tiktok server_error: …").
REFRESH_BEFORE_CHECK = "token refresh"


def _check_again(
    post: ScheduledPost,
    now: datetime,
    *,
    refused: PlatformError | None = None,
    refused_step: str = "",
    answered: bool = False,
) -> str:
    """Ask the platform about the post again later, or fail it once it has had its day. `refused`: the status
    read the platform just refused, kept on the post ("Checking: …", its words as the client redacted them)
    until a read is answered again (`answered`); `refused_step` names what it refused when that was a step
    before the read (REFRESH_BEFORE_CHECK). Without that, a day of refused reads ended "did not finish
    processing", which is not what happened, and the platform's words were nowhere."""
    # The clock starts at the creating call (TikTok) or, where there is none to record (Instagram's
    # container, possibly made ahead), when this attempt started: the claim sets due_at to that moment
    # (publishing_claim). Not the post's time: an ops retry days later, a retry after a day's throttling,
    # or a first attempt a day late (workers down) failed at its first "still processing". Not updated_at
    # either: conditional .update()s never move it.
    started = post.publish_attempted_at or max(post.scheduled_for, post.due_at)
    kept = post.error_message.startswith(CHECK_REFUSED)
    words = f"{refused_step}: {refused}" if refused_step else str(refused)
    note = shorten(f"{CHECK_REFUSED}{words}", MESSAGE_LENGTH) if refused is not None else ""
    if refused is not None:
        _log_check_refused(post, refused, step=refused_step, note=note, repeated=kept)
        last_refusal = words
    else:
        last_refusal = post.error_message.removeprefix(CHECK_REFUSED) if kept and not answered else ""
    if now - started > PUBLISH_GIVE_UP:
        message = "The platform did not finish processing the post within 24 hours."
        if last_refusal:
            message = (
                "The platform did not say within 24 hours how the post ended: it refused the status checks, "
                f"the last with: {last_refusal}"
            )
        # The post may be live (PLATFORM_UNAVAILABLE keeps it "outcome unknown" for post_retry, as API.md's
        # code for it). answered=False: Layers gave up waiting; no publishing call of the platform's failed.
        return _fail(post, "PLATFORM_UNAVAILABLE", message, answered=False)
    waited = max(now - started, timedelta(0))
    delay = min(max(STATUS_POLL_FIRST, waited / 4), STATUS_POLL_MAX)
    changes = {"next_check_at": now + delay, "claimed_until": None}
    if refused is not None:
        changes["error_message"] = note
    elif answered and kept:
        changes["error_message"] = ""  # answered again: the refusal no longer stands
    updated = _still_ours(post).update(**changes)
    return "processing" if updated else "skipped"


def _log_check_refused(post: ScheduledPost, exc: PlatformError, *, step: str, note: str, repeated: bool) -> None:
    """One WARNING when the platform starts refusing a post's status reads (or the `step` before them); its
    repeats (a read every 2 minutes for up to a day, for every post in flight during an outage) at INFO when
    its words (`note`, as kept on the post) change, and DEBUG otherwise."""
    if not repeated:
        level = logging.WARNING
    elif post.error_message != note:
        level = logging.INFO
    else:
        level = logging.DEBUG
    log.log(
        level,
        "%s of %s refused by %s (%s %s); asked again later",
        f"{step} before the status check" if step else "status check",
        post.pk,
        _answering(post),
        type(exc).__name__,
        exc.log_code,
    )


# Fairness: managed dispatches run on the publishing threads every partner shares, and each may wait for its
# provider up to 2 × LAYERS_PLATFORM_TIMEOUT. So at most MANAGED_PROVIDER_IN_FLIGHT calls to one provider at
# once, and none for MANAGED_COOL_OFF after MANAGED_FAILURES_BEFORE_COOL_OFF calls in a row got no answer
# (accounts/callgate.py). A post over the limit is deferred: queued again a few seconds later (or when the
# cool-off ends), its claim not counted as an attempt (its retry window goes on meanwhile).
MANAGED_PROVIDER_IN_FLIGHT = 2
FAILURES_BEFORE_COOL_OFF = 5
MANAGED_COOL_OFF = timedelta(minutes=1)


def managed_limits(provider_id) -> list:
    """The gate a managed provider's calls go through: its calls in flight at once, and its cool-off after
    FAILURES_BEFORE_COOL_OFF failures in a row."""
    from accounts import callgate

    return [
        callgate.Limit(
            managed_gate_key(provider_id),
            in_flight=MANAGED_PROVIDER_IN_FLIGHT,
            failures_to_trip=FAILURES_BEFORE_COOL_OFF,
            cool_off=MANAGED_COOL_OFF,
        )
    ]


def managed_gate_key(provider_id) -> str:
    return f"managed-provider:{provider_id}"


def _gate_holder(post: ScheduledPost) -> str:
    """Who holds a provider slot: the post under this claim (`claimed_until` is the claim's token). Duplicate
    runs of one claim find each other ("held"), but a claim made after the resolver requeued a run that died
    mid-call does not find the dead run's slot (held until its lease ends) and goes ahead at once."""
    return f"{post.pk}@{post.claimed_until.isoformat()}"


def _managed_enter(post: ScheduledPost, limits: list, holder: str) -> str | None:
    """Take a slot at the provider's gate for this post: None when taken (the caller calls the provider, then
    callgate.leave), otherwise the outcome. Under the post's row lock, so that deciding and deferring are one
    step: a duplicate run of the claim finds the post held (the other run is calling) and is skipped, never
    requeueing the post under that call (the next tick would call the provider a second time). Raises
    _LostClaim / _AccountGone (_unless_account_gone): the provider posts on the account, so not once it is
    revoked or released. The account's row lock is taken first (_lock_account): a deferral puts the post back
    in the queue, and read without it, a revoke committing meanwhile (its queued posts canceled already) left a
    queued post on a disconnected account."""
    from accounts import callgate

    with transaction.atomic():
        _lock_account(post)  # then _unless_account_gone, a later statement, sees a revoke that committed first
        _unless_account_gone(post, lambda rows: rows.select_for_update(of=("self",)).exists())
        refused = callgate.enter(limits=limits, holder=holder, lease=CLAIM_LEASE)
        if refused is None:
            return None
        if refused.reason == "held":
            return "skipped"
        _still_ours(post).update(
            status=ScheduledPost.Status.QUEUED,
            attempts=F("attempts") - 1,  # the claim made no attempt (the claim counted one)
            due_at=refused.retry_at,
            claimed_until=None,
            next_check_at=None,
        )
    return "deferred"


def check_provider_url(url: str) -> None:
    """Raise UnsafeURL unless a managed provider may be sent posts at `url`: https on a public address, as
    webhook destinations (UnresolvedHost when its host does not resolve now). The provider gets partner
    content (caption, media URLs, handle, post id): over plain http anyone on the path reads it, and the
    signature protects its integrity, not its secrecy. Plain http and local addresses only where private
    fetches are allowed (LAYERS_ALLOW_PRIVATE_FETCH: dev and tests, whose providers run on 127.0.0.1; forced
    off by production settings). Checked before every call and when staff save a provider in the admin."""
    from config.netguard import UnsafeURL, assert_public_url

    private_ok = settings.LAYERS_ALLOW_PRIVATE_FETCH
    if urlsplit(url).scheme != "https" and not private_ok:
        raise UnsafeURL("the URL must use https")
    assert_public_url(url, allow_private=private_ok)


def _dispatch_managed(post: ScheduledPost) -> str:
    """Hand the post to the project's managed-distribution provider: a signed POST carrying our
    Idempotency-Key (the post id), so a repeat after a crash or a retry is deduplicated by the provider.
    "deferred" when the provider has its calls in flight already or is in a cool-off (see above)."""
    from accounts import callgate
    from accounts.platforms.http import platform_request
    from config.netguard import UnresolvedHost, UnsafeURL, public_client
    from config.signing import signature_header

    provider = ManagedProvider.objects.filter(project_id=post.project_id, enabled=True).first()
    if provider is None:
        # Layers staff set providers up (the admin), never the partner: the message says who can mend it.
        return _fail(
            post,
            "PLATFORM_REJECTED",
            "The project has no managed-distribution provider; Layers staff must set one up in the admin. "
            "The post was not sent.",
            answered=False,
        )
    secret = provider.secret
    if not secret:
        # Nothing to sign with: the secret's key was removed from LAYERS_TOKEN_KEYS before rotate_token_keys
        # re-encrypted it, or none was ever stored (a row made outside the admin, which requires one: the ORM,
        # a data migration). Signed with an empty key, every post read as the provider refusing it (HTTP 401).
        # Failed, not retried, as the other provider configuration problems are (no provider, above; an unsafe
        # URL, below): waiting does not mend it, only staff entering the secret, and retrying for the hour's
        # window would only delay the failure that tells them. The post reached no one: ops retry it
        # (post_retry) once the secret is there.
        log.error(
            "managed provider %s (%s) of project %s: %s; post %s not sent, enter the secret in the admin",
            provider.pk,
            provider.name,
            provider.project_id,
            "its secret no longer decrypts (encryption key removed from LAYERS_TOKEN_KEYS?)"
            if secret is None and provider.secret_enc
            else "no secret is stored",
            post.pk,
        )
        return _fail(
            post,
            "PLATFORM_REJECTED",
            "The managed-distribution provider's secret is missing or cannot be read; Layers staff must enter it "
            "in the admin. The provider was not called.",
            answered=False,
        )
    account, container = post.social_account, post.container
    body = json.dumps(
        {
            "scheduledPostId": post.pk,
            "projectId": post.project_id,
            "socialAccountId": account.pk,
            "platform": account.platform,
            "handle": account.identity.handle,
            "mediaType": container.media_type,
            "mediaUrls": container.media_urls,
            "caption": container.caption,
            "placement": post.placement,
            "scheduledFor": datetime_output(post.scheduled_for),  # the API's one shape
        },
        separators=(",", ":"),
    ).encode()
    try:
        check_provider_url(provider.endpoint_url)
    except UnresolvedHost as exc:
        # The resolver failed or is restarting (EAI_AGAIN): nothing says the provider is gone, and the same
        # failure inside the client (a connection error) is retried. Only an address found non-public, which
        # waiting will not change, fails the post for good.
        return _retry_later(post, PlatformUnavailable(f"the provider's host did not resolve ({exc})"))
    except UnsafeURL as exc:
        return _fail(
            post,
            "PLATFORM_REJECTED",
            f"The managed-distribution provider's URL is not allowed ({exc}); Layers staff must correct it in "
            "the admin. The provider was not called.",
            answered=False,
        )
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": post.pk,
        "Layers-Signature": signature_header(body, [secret]),
    }
    limits = managed_limits(provider.pk)
    holder = _gate_holder(post)  # taken now: settling the post below rewrites its claim in memory
    try:
        entered = _managed_enter(post, limits, holder)
    except _LostClaim:
        return "skipped"
    except _AccountGone:
        return _fail(post, "ACCOUNT_DISCONNECTED", "The account was disconnected.", answered=False)
    if entered is not None:
        return entered
    answered = None
    try:
        try:
            timeout = httpx.Timeout(settings.LAYERS_PLATFORM_TIMEOUT, connect=5.0)
            with public_client(timeout=timeout) as client:
                # Within the same answer deadline and size cap as a platform call. Retrying whatever happened
                # is safe here: the provider deduplicates on the Idempotency-Key.
                response = platform_request(
                    client, "managed provider", "POST", provider.endpoint_url, content=body, headers=headers
                )
        except PlatformUnavailable as exc:
            answered = False
            return _retry_later(post, exc)
        answered = True
        return _provider_answered(post, response)
    finally:
        callgate.leave(limits=limits, holder=holder, answered=answered)


def _provider_answered(post: ScheduledPost, response: httpx.Response) -> str:
    """Settle the post by its provider's HTTP answer: 2xx published, 429 / 5xx retried, anything else refused."""
    if 200 <= response.status_code < 300:
        try:
            answer = json_loads(response.content)  # nested too deep is a ValueError too: the provider has the post
        except ValueError:
            answer = {}
        external_id, external_url = _provider_answer(post, answer if isinstance(answer, dict) else {})
        return _published(post, external_id=external_id, external_url=external_url)
    if response.status_code == 429 or response.status_code >= 500:
        cls = RateLimited if response.status_code == 429 else PlatformUnavailable
        return _retry_later(post, cls(f"provider answered {response.status_code}", status=response.status_code))
    return _fail(post, "PLATFORM_REJECTED", f"The provider refused the post (HTTP {response.status_code}).")


def _provider_answer(post: ScheduledPost, answer: dict) -> tuple[str, str]:
    """The provider's id and URL for the post, each "" when it cannot be kept. The provider has the post
    (2xx) whatever it wrote: an id or URL the database cannot store (too long, a NUL) must not stop the post
    being published (raising there left it `publishing`, queued again and sent to the provider at every
    tick), and the URL is handed to partners as `externalUrl` (API and webhooks), so only an absolute
    http(s) URL is kept (not `javascript:`)."""
    return _storable_outcome(post, str(answer.get("id") or ""), str(answer.get("url") or ""), source="managed provider")


def _storable_outcome(post: ScheduledPost, external_id: str, external_url: str, *, source: str) -> tuple[str, str]:
    """`external_id` and `external_url` of a published post as they may be stored and handed to partners, each
    "" (dropped with a warning naming `source` and the post) when not: an id the column cannot hold or with
    characters no id has, a URL that is no absolute http(s) URL, or too long for its column. The platform or
    provider has the post whatever it wrote: what it wrote must not keep the post from being published."""
    from config.api.returnurl import url_shape_problem

    meta = ScheduledPost._meta
    # Not printable: a NUL, which PostgreSQL refuses in text, and line breaks no partner expects in an id.
    if len(external_id) > meta.get_field("external_id").max_length or not external_id.isprintable():
        log.warning("%s's id for %s dropped: not storable (%d characters)", source, post.pk, len(external_id))
        external_id = ""
    if external_url:
        problem = url_shape_problem(external_url, schemes=("https", "http"))
        if problem is None and len(external_url) > meta.get_field("external_url").max_length:
            problem = "too long"
        if problem:
            log.warning("%s's url for %s dropped: %s", source, post.pk, problem)
            external_url = ""
    return external_id, external_url


# --- After a restore from a backup -------------------------------------------------------------------
# A database restored from a backup taken at T has every post as it was at T: a post published since is
# `queued` again (or `publishing` without its mark), and the first dispatcher tick would publish it a second
# time. TikTok's init and Instagram's media_publish (and its draft delivery) take no idempotency key, and the
# rows that said the post went out are gone with everything written after T. Which of them went out Layers
# cannot tell, so ops hold them all before the workers start (manage.py hold_after_restore) and check each on
# the platform, as for a post whose answer was lost.

RESTORE_HOLD_CODE = "PLATFORM_UNAVAILABLE"
RESTORE_HOLD_BATCH = 500
# What the dispatcher writes is read as written after T only this much past it: the time given is the
# operator's, from the backup tool's clock, and may be rounded.
RESTORE_ACTIVITY_SLACK = timedelta(minutes=1)


def restore_hold_message(restored_to: datetime) -> str:
    """The error message of a post held after a restore to `restored_to` (the partner reads it in the API)."""
    at = restored_to.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return (
        f"Layers' database was restored from a backup taken at {at}, and this post may have been published on "
        "the platform since then: it is not sent again automatically, so that it cannot appear twice. Check the "
        "account on the platform; if the post is not there, schedule it again or ask Layers to retry it."
    )


def _restore_hold_candidates(*, now: datetime, message: str) -> QuerySet:
    """The posts a restore may have put back after they went out: `queued` or `publishing`, due by `now`, with
    no publish id, not managed. A post due later was due later at the backup's time as well, so it was not sent
    since. A known publish id is asked about by the resolver (post_resolve), never sent again; a managed post
    goes to its provider with the post id as Idempotency-Key, which the provider deduplicates. Nor a post held
    for this restore already (its attempt with `message`): queued again since, it was retried by staff who
    checked it is not on the platform."""
    held = ScheduledPostAttempt.objects.filter(post_id=OuterRef("pk"), outcome=ScheduledPostAttempt.Outcome.FAILED)
    return (
        ScheduledPost.objects.filter(
            status__in=[ScheduledPost.Status.QUEUED, ScheduledPost.Status.PUBLISHING], due_at__lte=now, publish_id=""
        )
        .exclude(mode=ScheduledPost.Mode.MANAGED)
        .exclude(Exists(held.filter(message=shorten(message, ATTEMPT_MESSAGE_LENGTH))))
    )


def posts_hold_after_restore(
    *, restored_to: datetime, now: datetime | None = None, dry_run: bool = False, batch: int = RESTORE_HOLD_BATCH
) -> list[tuple[str, str]]:
    """After a restore to `restored_to` (the backup's time) and before any worker or beat starts: fail every
    post the restore may have put back after it went out (_restore_hold_candidates) with PLATFORM_UNAVAILABLE
    and restore_hold_message, as any failure (_fail: its attempt and `scheduled_post.failed`). A post with no
    mark gets `publish_attempted_at` = `restored_to` (from then on it may have been sent), so a retry
    (post_retry) asks for the confirmation that it is not on the platform (_outcome_unknown). Returns
    (organization id, post id) of the posts held (with `dry_run`, that would be), in that order.

    One transaction per `batch` posts, each row locked and updated only if still as read: safe to run twice
    (a held post is failed, no longer a candidate) and beside a dispatcher started too early: its run on a post
    held meanwhile can no longer write it (_still_ours), and the post stays failed, "may have been published"."""
    now = now or timezone.now()
    message = restore_hold_message(restored_to)
    held: list[tuple[str, str]] = []
    after = ""
    while True:
        with transaction.atomic():
            # By id: each batch starts after the last one's, whatever became of its posts.
            candidates = _restore_hold_candidates(now=now, message=message).filter(pk__gt=after).order_by("pk")
            posts = list((candidates if dry_run else candidates.select_for_update())[:batch])
            for post in posts:
                if dry_run or _hold_after_restore(post, restored_to=restored_to, message=message) == "failed":
                    held.append((post.organization_id, post.pk))
        if len(posts) < batch:
            return sorted(held)
        after = posts[-1].pk


def _hold_after_restore(post: ScheduledPost, *, restored_to: datetime, message: str) -> str:
    # The row as read (and locked), queued or publishing: _still_ours is a publisher's, for publishing rows.
    as_read = ScheduledPost.objects.filter(
        pk=post.pk,
        status=post.status,
        publish_id="",
        publish_attempted_at=post.publish_attempted_at,
        claimed_until=post.claimed_until,
    )
    return _fail(
        post,
        RESTORE_HOLD_CODE,
        message,
        answered=False,  # Layers' own doing: no platform refused anything
        rows=as_read,
        publish_attempted_at=post.publish_attempted_at or restored_to,
    )


def posts_held_after_restore(*, restored_to: datetime) -> list[tuple[str, str]]:
    """(organization id, post id) of the posts a hold after the restore to `restored_to` has failed, whatever
    became of them since (a staff retry): what the runs so far held, for ops who lost their list."""
    return sorted(
        set(
            ScheduledPostAttempt.objects.filter(
                outcome=ScheduledPostAttempt.Outcome.FAILED,
                error_code=RESTORE_HOLD_CODE,
                message=shorten(restore_hold_message(restored_to), ATTEMPT_MESSAGE_LENGTH),
            ).values_list("post__organization_id", "post_id")
        )
    )


def posts_activity_after(*, moment: datetime) -> dict[str, int]:
    """What only a running dispatcher (workers and beat) writes, found written after `moment` (the backup's
    time): posts claimed since (`claimed_until` is a claim's time plus CLAIM_LEASE), posts published since, and
    platform answers recorded since. On a database just restored from a backup taken at `moment` there is
    none: any means workers ran on it already (and may have published posts a second time), or the backup was
    taken later than `moment`. Only the counts that are not 0."""
    cut = moment + RESTORE_ACTIVITY_SLACK
    found = {
        "postsClaimed": ScheduledPost.objects.filter(claimed_until__gt=cut + CLAIM_LEASE).count(),
        "postsPublished": ScheduledPost.objects.filter(published_at__gt=cut).count(),
        "platformAnswers": ScheduledPostAttempt.objects.filter(platform__isnull=False, finished_at__gt=cut).count(),
    }
    return {what: n for what, n in found.items() if n}


# --- Metrics ----------------------------------------------------------------------------------------

METRICS_BATCH = 20
METRIC_FIELDS = ("views", "likes", "comments", "shares")
# The largest figure the columns hold (PostgreSQL's bigint). A platform's figure past it, or below 0, is no
# count a post can have: unknown, not stored (_account_sync_metrics).
METRIC_COUNT_MAX = INT64_MAX
METRICS_STALE_AFTER = timedelta(hours=1)
# Posts published before LAYERS_METRICS_SYNC_WINDOW: refreshed this often.
METRICS_OLD_STALE_AFTER = timedelta(days=1)
# TikTok fills a post's public id only after moderation (PLATFORMS.md): a post found PUBLISH_COMPLETE before
# that is published without externalId / externalUrl, and its metrics (fetched by that id) cannot be read.
# The metrics sync asks TikTok about such a post again, at the metrics' pace, for this long after it was
# published, then gives up: a post the public cannot see (SELF_ONLY) never gets one.
POST_ID_FOLLOW_UP_FOR = timedelta(days=7)
# A run of the metrics sync takes the due posts this many at a time, and takes batches while posts are due
# for at most this long: less than the beat interval (globalPlatformPostsSync, 15 minutes), so a run has
# ended before the next starts. A batch started before the budget ends may overrun it, and a run can outlast
# the interval (a slow platform): overlapping runs take different posts (_take_for_sync), and a reading is
# never written over a newer one (_sync_metrics_batch). Its capacity follows the backlog instead of a fixed
# 5,000 posts a run.
METRICS_SYNC_BATCH = 1000
METRICS_SYNC_RUN_BUDGET = timedelta(minutes=10)
# How long the sync leaves out an account the platform throttled or failed for now, unless it said longer
# (Retry-After, or Meta's usage header): past TikTok's one-minute rate windows, and within the beat interval
# (15 minutes), so that the next run asks again.
METRICS_RETRY_AFTER = timedelta(minutes=5)


def posts_sync_metrics(*, now: datetime | None = None, limit: int | None = None) -> int:
    """globalPlatformPostsSync: refresh metrics of published posts (mode publish: a managed post's id is its
    provider's) whose account is connected and has its distribution layers, hourly for posts published within
    LAYERS_METRICS_SYNC_WINDOW (30 days) and daily for older ones, grouped per account and batched per
    platform call. The metrics of disconnected (or reauth_required) accounts' posts are left as they are. TikTok
    posts published before their public id was known are asked about first (_posts_attach_late_ids), those of
    accounts no longer connected included (their id and URL only, with a token of another holder of the grant).
    Each account is synced on its own: one account's error skips that account only, and an account the platform
    throttled (or failed for now) is left alone until it may be asked again (_hold_sync). Returns how many posts
    were updated.

    A run takes the due posts METRICS_SYNC_BATCH at a time, each batch shared across organizations
    (_take_for_sync), and goes on while posts are due, until METRICS_SYNC_RUN_BUDGET is spent: a fixed number
    of posts a run (5,000, 20,000 an hour) made every organization's hourly refresh as late as the biggest
    organization's backlog. `limit` caps the posts a run asks about (None: the budget alone)."""
    deadline = time.monotonic() + METRICS_SYNC_RUN_BUDGET.total_seconds()
    updated = 0
    remaining = limit
    unasked: list[ScheduledPost] = []
    try:
        while remaining is None or remaining > 0:
            size = METRICS_SYNC_BATCH if remaining is None else min(METRICS_SYNC_BATCH, remaining)
            # Each batch is stamped with the time it is asked about (a run may last minutes), unless told.
            taken, followed, synced = _sync_metrics_batch(now=now or timezone.now(), limit=size, unasked=unasked)
            updated += synced
            if remaining is not None:
                remaining -= taken
            if (taken < size and followed < size) or time.monotonic() >= deadline:
                break
    finally:
        # When the run ends, not as soon as their account's sync stopped: first in line again, they would be
        # taken by the run's next batch at once, and the account that stopped asked again, batch after batch.
        _give_back(unasked)
    return updated


def _sync_metrics_batch(*, now: datetime, limit: int, unasked: list[ScheduledPost]) -> tuple[int, int, int]:
    """One batch of posts_sync_metrics: (posts taken, posts asked about their late id, posts updated). The
    posts an account's sync stopped before are added to `unasked`."""
    stale = now - METRICS_STALE_AFTER
    followed = _posts_attach_late_ids(now=now, stale=stale, limit=limit, unasked=unasked)
    # Posts published before the window are refreshed once a day, not hourly: polling every post ever
    # published each hour would make each run's cost (and platform calls) grow with all history, while
    # their figures barely move; they are still refreshed, as the contract has it.
    window_start = now - settings.LAYERS_METRICS_SYNC_WINDOW
    old_stale = now - METRICS_OLD_STALE_AFTER
    with_layers = Layer.objects.filter(kind__in=ACCOUNT_LAYER_KINDS).values("social_account_id")
    due = (
        ScheduledPost.objects.filter(
            status=ScheduledPost.Status.PUBLISHED,
            # Only posts we published: a managed post's external id is its provider's, which the platform
            # does not know (asked about every run, forever), and a draft has no id on the platform.
            mode=ScheduledPost.Mode.PUBLISH,
            social_account__status=SocialAccount.Status.CONNECTED,
            social_account__in=with_layers,
        )
        .exclude(external_id="")
        .filter(
            (Q(published_at__gte=window_start) & _metrics_older_than(stale))
            | (Q(published_at__lt=window_start) & _metrics_older_than(old_stale))
        )
    )
    posts = _take_for_sync(due, now=now, limit=limit, related=("social_account__identity",))
    synced = _each_account(
        posts, "metrics sync", lambda account_posts: _account_sync_metrics(account_posts, now=now, unasked=unasked)
    )
    read = [post for account_posts in synced for post in account_posts]
    return len(posts), followed, _write_metrics(read, now=now)


def _write_metrics(posts: list[ScheduledPost], *, now: datetime) -> int:
    """Store the figures read into `posts` (one batch, shared across organizations); returns how many rows were
    written. One write for the batch; should the database refuse it (DataError: a value no check foresaw), each
    post is written on its own and the ones it refuses are logged and left out. The batch's one write failing
    ended the whole run: every account of every organization in that batch, and in the batches after it, got no
    metrics, every hour (the posts were stamped asked, and the bad one came back each time).

    Only over older figures: a run that outlasted METRICS_STALE_AFTER wrote what it read after a later run had
    read the same post again, and its syncedAt and figures went back in time. bulk_update keeps the queryset's
    filter, and PostgreSQL checks it again on a row another run is writing meanwhile."""
    rows = ScheduledPost.objects.filter(Q(metrics_synced_at__isnull=True) | Q(metrics_synced_at__lt=now))
    fields = [*METRIC_FIELDS, "metrics_synced_at"]
    try:
        with transaction.atomic():  # a savepoint if a caller holds a transaction: it stays usable
            return rows.bulk_update(posts, fields)
    except DataError:
        log.exception("metrics sync: the write of %d posts' figures was refused; writing them one by one", len(posts))
    updated = 0
    for post in posts:
        try:
            with transaction.atomic():
                updated += rows.bulk_update([post], fields)
        except DataError:
            log.exception(
                "metrics sync: the figures read for post %s (account %s) could not be stored; left as they were",
                post.pk,
                post.social_account_id,
            )
    return updated


def _metrics_older_than(cutoff: datetime) -> Q:
    """A post whose metrics were neither read nor asked for since `cutoff` (never counts as before)."""
    return (Q(metrics_synced_at__isnull=True) | Q(metrics_synced_at__lt=cutoff)) & (
        Q(metrics_attempted_at__isnull=True) | Q(metrics_attempted_at__lt=cutoff)
    )


def _take_for_sync(
    due, *, now: datetime, limit: int, related: tuple[str, ...], post_ids: bool = False
) -> list[ScheduledPost]:
    """Take up to `limit` of the `due` posts for this batch and stamp them asked (metrics_attempted_at) before
    any platform call, in one short transaction that skips rows another run is taking (SKIP LOCKED). Those an
    account's sync then does not ask about (it stopped before them) are given back when the run ends
    (_give_back). The posts of an account the platform asked to leave alone for now are not taken
    (SocialAccount.metrics_not_before; post_ids_not_before when taking for the post id follow-up, `post_ids`).

    Shared across organizations: round-robin, each organization's least recently asked post first, then each
    one's second, and so on (row_number() over each organization's due posts). Least recently asked first
    over all posts let one organization's backlog (thousands of posts stale for hours) fill whole batches
    ahead of another organization's post due minutes ago. Within an organization, least recently asked
    first: a post asked about and not answered must not hold its place.

    Runs overlapping (a run outlasting the beat interval, or two messages of the tick) take the next posts
    in line instead of asking the platform about the same ones again: rows another run is stamping are
    skipped, and the due filter is applied again under the lock (PostgreSQL rechecks a row changed
    meanwhile), so a row stamped by a run that committed since is not taken twice."""
    # Their marks stay as they are, so they are in their place in line when the account may be asked again.
    held = f"social_account__{'post_ids' if post_ids else 'metrics'}_not_before"
    due = due.filter(Q(**{f"{held}__isnull": True}) | Q(**{f"{held}__lte": now}))
    order = (F("metrics_attempted_at").asc(nulls_first=True), "social_account_id", "pk")
    # PostgreSQL refuses FOR UPDATE beside a window function: the ranking is a subquery.
    turn = Window(RowNumber(), partition_by=[F("organization_id")], order_by=list(order))
    ranked = due.annotate(turn=turn).order_by("turn", *order).values("pk")[:limit]
    with transaction.atomic():
        before = dict(
            due.filter(pk__in=Subquery(ranked))
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", "metrics_attempted_at")
        )
        ScheduledPost.objects.filter(pk__in=before).update(metrics_attempted_at=now)
    posts = list(ScheduledPost.objects.filter(pk__in=before).select_related(*related))
    for post in posts:
        post.asked_before = before[post.pk]  # its place in line, should it not be asked after all (_give_back)
    # In line order, from the marks before this one (all alike now): each account's sync asks about the least
    # recently asked first, and when it is cut off partway, it is those it did not reach that wait.
    posts.sort(key=lambda p: (p.asked_before is not None, p.asked_before or now, p.social_account_id, p.pk))
    return posts


def _give_back(posts: list[ScheduledPost]) -> None:
    """Put `posts`, taken by _take_for_sync and not asked about (their account's sync stopped before them),
    back in their place in line: their mark from before (asked_before), so the next run takes them ahead of
    the posts asked this time. Left marked asked, they tied with those and went behind them by id again: an
    account cut off partway every run (throttled) had the same posts read every run and the others never.
    Only where the mark is still the one _take_for_sync gave them (another run may have taken them since)."""
    batches: dict[datetime, dict[datetime | None, list[str]]] = {}
    for post in posts:
        batches.setdefault(post.metrics_attempted_at, {}).setdefault(post.asked_before, []).append(post.pk)
    for taken_at, places in batches.items():
        ids = [pk for pks in places.values() for pk in pks]
        ScheduledPost.objects.filter(pk__in=ids, metrics_attempted_at=taken_at).update(
            # Cast: PostgreSQL types a CASE of parameters alone (None included) as text (bulk_update casts too).
            metrics_attempted_at=Cast(
                Case(*(When(pk__in=pks, then=Value(before)) for before, pks in places.items())), DateTimeField()
            )
        )


def _account_sync_metrics(
    account_posts: list[ScheduledPost], *, now: datetime, unasked: list[ScheduledPost]
) -> list[ScheduledPost]:
    """Read the metrics of one account's posts into them (not saved); returns those that got metrics. A
    dead token moves the account to reauth_required; other platform errors that stop the client's call (a
    throttle, an outage: a post the platform fails on alone is only left out by the client) end the account's
    sync this run, keeping what was read before them; the posts it did not ask about are added to
    `unasked`, given back when the run ends."""
    account = account_posts[0].social_account
    if not account_has_layers(account=account):
        return []
    account = _synced_account(account, "metrics sync")
    if account is None:
        return []
    client = _client(account.platform)
    updated: list[ScheduledPost] = []
    for i in range(0, len(account_posts), METRICS_BATCH):
        batch = account_posts[i : i + METRICS_BATCH]
        stopped: PlatformError | None = None
        try:
            metrics = client.fetch_metrics(
                access_token=account.access_token or "",
                platform_user_id=account.identity.platform_user_id,
                external_ids=[p.external_id for p in batch],
            )
        except PlatformError as exc:
            # The readings made before the stop cost calls: kept, not asked again.
            stopped, metrics = exc, exc.readings
        for post in batch:
            m = metrics.get(post.external_id)
            known = {name: getattr(m, name) for name in METRIC_FIELDS} if m is not None else {}
            known = {name: value for name, value in known.items() if _a_count(value, account, post, name)}
            if not known:
                continue
            # A figure the platform did not give this time (Instagram's insights are an empty set until they
            # exist and while unavailable; a token without the insights permission reads likes and comments
            # only) keeps the value last synced, null if it never had one: unknown now is not 0.
            for name, value in known.items():
                setattr(post, name, value)
            post.metrics_synced_at = now
            updated.append(post)
        if isinstance(stopped, TokenInvalid):
            # Dead, or only old (renewed meanwhile): then the next run reads on the new token.
            with contextlib.suppress(PlatformError):
                social_account_token_rejected(
                    account_id=account.pk,
                    token_version=account.token_version,
                    reason=refusal_reason("reading metrics", stopped),
                    source="metrics sync",
                )
        if stopped is not None:
            log.info("metrics sync for %s stopped: %s", account.pk, type(stopped).__name__)
            _hold_sync(account.pk, stopped)
            not_asked = set(stopped.unasked)
            unasked += [p for p in batch if p.external_id in not_asked] + account_posts[i + METRICS_BATCH :]
            break
    return updated


def _a_count(value: int | None, account: SocialAccount, post: ScheduledPost, name: str) -> bool:
    """Whether a figure the platform gave (`name` of `post`) is one to store: known, and a count a post can have
    (0 to METRIC_COUNT_MAX). Past bigint it failed the write of the whole batch (_write_metrics), and a negative
    count was stored and shown to partners as it came. Otherwise it is unknown, as a figure not given is: the
    post keeps its last value. With a warning naming the platform and the post: the platform sent it."""
    if value is None:
        return False
    if 0 <= value <= METRIC_COUNT_MAX:
        return True
    log.warning(
        "metrics sync: %s gave %s = %s for post %s (account %s), no count a post can have: not stored",
        account.platform,
        name,
        value,
        post.pk,
        account.pk,
    )
    return False


def _hold_sync(account_id: str, exc: PlatformError, *, post_ids: bool = False) -> None:
    """The platform stopped an account's metrics reads (or, `post_ids`, its post id follow-up) with `exc`: when
    that says "not now" (throttled, down), the sync leaves them out for METRICS_RETRY_AFTER, or as long as the
    platform asked (Retry-After) when that is longer, as the health check does (HEALTH_RETRY_AFTER). It asked
    the account again in the run's next batch and at the next beat, whatever the platform had said."""
    if isinstance(exc, RateLimited | PlatformUnavailable):
        wait = max(METRICS_RETRY_AFTER, timedelta(seconds=exc.retry_after or 0))
        social_account_hold_sync(account_id=account_id, until=timezone.now() + wait, post_ids=post_ids)


def _posts_attach_late_ids(*, now: datetime, stale: datetime, limit: int, unasked: list[ScheduledPost]) -> int:
    """Ask TikTok again about published posts still without a public id (see POST_ID_FOLLOW_UP_FOR) and record
    the id and URL of those that have one now; the metrics sync then reads their metrics in the same run when
    their account is connected. Posts of accounts no longer connected are asked about too (_late_id_asker):
    API.md keeps a revoked or released account's published posts in the history "with their externalUrl",
    and a post published moments before the revoke had none yet. A post still without one (or that nothing
    could ask about: no holder of the grant left) is stamped metrics_attempted_at, so it is asked at most once
    per METRICS_STALE_AFTER. Returns how many were asked. No event: API.md has none for a URL that appears
    later (the scheduled post and the published-posts list show it)."""
    due = (
        ScheduledPost.objects.filter(
            status=ScheduledPost.Status.PUBLISHED,
            mode=ScheduledPost.Mode.PUBLISH,
            external_id="",
            published_at__gte=now - POST_ID_FOLLOW_UP_FOR,
            social_account__platform="tiktok",
        )
        .exclude(publish_id="")
        .filter(Q(metrics_attempted_at__isnull=True) | Q(metrics_attempted_at__lt=stale))
    )
    waiting = _take_for_sync(
        due, now=now, limit=limit, related=("container", "social_account__identity"), post_ids=True
    )
    _each_account(
        waiting, "post id follow-up", lambda account_posts: _account_attach_late_ids(account_posts, unasked=unasked)
    )
    return len(waiting)


def _account_attach_late_ids(account_posts: list[ScheduledPost], *, unasked: list[ScheduledPost]) -> None:
    """Record the public ids TikTok now gives for one account's posts. A refusal about one post (a publish id
    TikTok no longer knows) skips that post; an error about the account or the platform (a dead token,
    throttling, an outage) skips the account this run — a dead token is the metrics sync's (or the health
    check's) to act on — and adds the posts it did not ask about to `unasked`, given back when the run ends:
    TikTok allows 30 status calls a minute per token, and a public post behind 30 that never get a public id
    (SELF_ONLY) was never asked. The same holds for a token borrowed from another holder (_late_id_asker), but
    for a refusal of it: that is the holder's own calls' to find, and these posts are left stamped asked."""
    asker = _late_id_asker(account_posts[0].social_account)
    if asker is None:
        return
    account, token = asker
    borrowed = account.status != SocialAccount.Status.CONNECTED
    client = _client(account.platform)
    for n, post in enumerate(account_posts):
        try:
            status = client.publish_status(
                access_token=token,
                platform_user_id=account.identity.platform_user_id,
                publish_id=post.publish_id,
                caption=post.container.caption,
                not_before=post.created_at,
                publish=False,  # only reads: the follow-up never publishes
            )
        except RequestRejected as exc:
            log.info("post id follow-up for %s: %s refused (%s)", account.pk, post.pk, exc.code)
            continue
        except PlatformError as exc:
            log.info("post id follow-up for %s skipped: %s", account.pk, type(exc).__name__)
            # Its own token or a borrowed one: the token this account's posts are asked with is held back.
            _hold_sync(account.pk, exc, post_ids=True)
            if borrowed and isinstance(exc, TokenInvalid):
                # Given back, they would be asked again at every run (every 15 minutes) on a token TikTok refuses
                # until its holder's own calls find it dead: asked again in an hour, with whatever token a
                # holder has then.
                return
            unasked += account_posts[n if refused_for_the_account(exc) else n + 1 :]
            return
        if status.state == "published" and status.external_id:
            # What the database cannot store would fail this write at every run: left out (_storable_outcome).
            external_id, external_url = _storable_outcome(
                post, status.external_id, status.external_url or "", source=account.platform
            )
            # Not asked about its metrics yet: the metrics sync of this run takes it first if its account is
            # connected. An account no longer connected gets no metrics syncs (API.md: a revoked account's posts
            # get "no further metrics syncs"); a reauth_required one's start once it is reauthorized.
            ScheduledPost.objects.filter(pk=post.pk, status=ScheduledPost.Status.PUBLISHED, external_id="").update(
                external_id=external_id, external_url=external_url, metrics_attempted_at=None
            )


def _late_id_asker(account: SocialAccount) -> tuple[SocialAccount, str] | None:
    """The account and the token to ask TikTok with about its posts' public ids, or None: nothing can ask this
    run (the posts stay stamped asked, and are asked again in METRICS_STALE_AFTER).

    A connected account asks with its own token, refreshed first if it expired (_synced_account). An account
    no longer connected asks with the token of another holder of the same TikTok user that kept the app's grant
    (platform_user_token_kept: another binding in any project or organization, a lease, Layers' pool, where a
    released lease's token went back), as the resolver reads how a post still publishing ended (_resolve): the
    grant the post was made under is alive, and TikTok gives its public id once moderation is over. That is
    a disconnected account (its token wiped: revoked, or a lease released), and a reauth_required one as well:
    its own token was refused, or expired past refreshing, and asking with it would only be refused again.
    The holder's token only reads about this account's own post; the holder is left as it is. No holder left
    with an unexpired token (the revoke withdrew the grant, or a holder's renewal fell behind): None."""
    if account.status == SocialAccount.Status.CONNECTED:
        synced = _synced_account(account, "post id follow-up")
        return (synced, synced.access_token or "") if synced is not None else None
    token = platform_user_token_kept(account=account)
    return (account, token) if token else None


R = TypeVar("R")


def _synced_account(account: SocialAccount, work: str) -> SocialAccount | None:
    """The account, its access token refreshed first if it expired meanwhile, for a periodic `work`; None
    when that refresh failed for now (logged) or the account is no longer connected: skipped this run."""
    try:
        account = social_account_with_fresh_token(account=account, source=work)
    except PlatformError as exc:
        log.info("%s for %s skipped: token refresh %s", work, account.pk, type(exc).__name__)
        return None
    return account if account.status == SocialAccount.Status.CONNECTED else None


def _each_account(posts: list[ScheduledPost], work: str, handle: Callable[[list[ScheduledPost]], R]) -> list[R]:
    """`handle` each account's posts in turn (in the order of their first post), returning what it returned
    for the accounts it finished. One account's surprise (an answer the client did not expect, a bug) is
    logged and must not cost every other account its turn; the caller stamps its posts as asked like the
    rest."""
    by_account: dict[str, list[ScheduledPost]] = {}
    for post in posts:
        by_account.setdefault(post.social_account_id, []).append(post)
    results: list[R] = []
    for account_id, account_posts in by_account.items():
        try:
            results.append(handle(account_posts))
        except Exception:
            log.exception("%s for %s failed", work, account_id)
            drop_broken_connection()
    return results
