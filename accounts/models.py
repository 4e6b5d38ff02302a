from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from config.api.ids import PrefixedIdField


class Organization(models.Model):
    """A partner company. Everything an API key can see hangs off one organization."""

    id = PrefixedIdField(prefix="org")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Set once the partner is off-boarded (accounts.services.organization_offboard): its keys revoked, its
    # accounts disconnected or released, and no new key can be issued for it. Its rows, wallet and ledger stay.
    offboarded_at = models.DateTimeField("off-boarded at", null=True, blank=True, editable=False)
    offboarded_by = models.CharField(
        "off-boarded by", max_length=200, blank=True, default="", db_default="", editable=False
    )

    def __str__(self):
        return self.name


class Project(models.Model):
    """One partner product (or environment) inside an organization; accounts are bound per project."""

    id = PrefixedIdField(prefix="prj")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="projects")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["organization", "-created_at", "-id"], name="project_org_newest")]

    def __str__(self):
        return self.name


KEY_PREFIX = "lyr_"  # what every key a partner holds starts with; the stored `prefix` follows it


def api_key_label(*, key_id: str, name: str, prefix: str) -> str:
    """An API key as staff read it wherever it acted (a canceled post, a lease's history, an account's status
    history, a refused call's log line): its name, its id and the start of the key as the partner holds it —
    never the key. One form everywhere, so that support can search one for the other."""
    named = f"{name} " if name else ""
    return f"API key {named}({key_id} / {KEY_PREFIX}{prefix.removeprefix(KEY_PREFIX)}…)"


class ApiKey(models.Model):
    """A partner credential. Only the prefix (to find the row) and a SHA-256 of the whole key are stored;
    the key itself is shown once, when it is created."""

    id = PrefixedIdField(prefix="key")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    allowed_return_domains = models.JSONField(
        default=list,
        blank=True,
        help_text="Exact hosts (lower-case, IDNA) a returnUrl may point at; include a non-default port "
        "as host:port. No wildcards, no subdomain matching.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name or self.id} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyKey(models.Model):
    """The first response to a POST sent with an Idempotency-Key (config/api/idempotency.py)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)  # null while the first request runs
    response_body = models.JSONField(null=True)
    # The database's clock, not the web host's: a retry may reach another host, whose clock is ahead or behind,
    # and begin() compares this time with the database's own (`Now()`, its statement's start on PostgreSQL).
    created_at = models.DateTimeField(db_default=Now(), db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="idempotency_key_per_org")]


class EventSubjectId(models.Func):
    """The id of what an event is about, read from its payload: `id` for an account's and a post's events,
    `requestId` for a lease request's (EVENT_TYPES' payloads are the subject's API representation). Support
    find the events of a post, an account or a lease request by it (the admin's event search), through the
    `event_subject` index on this same expression.

    The keys are written in the SQL, not passed as parameters (as KeyTextTransform does): with server-side
    binding (LAYERS_DB_PREPARED_STATEMENTS) a statement prepared with `data ->> $1` can be given a generic plan,
    which no expression index written `data ->> 'id'` matches. `->>` is also SQLite's (3.38+)."""

    template = "COALESCE((%(expressions)s ->> 'id'), (%(expressions)s ->> 'requestId'))"
    output_field = models.CharField()
    arity = 1


class Event(models.Model):
    """The outbox: one row per change a partner may hear about, written in the same transaction as the
    change (accounts.services.event_record), delivered to webhooks after commit, listed by GET /v1/events."""

    id = PrefixedIdField(prefix="evt")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    # The event's place in its organization's list, in the order events became visible (committed), given
    # after commit by accounts.services.events_sequence. createdAt is set before commit: ordered by it, an
    # event whose transaction commits late sorts below events a poller has already seen, and is missed.
    position = models.BigIntegerField(null=True, blank=True, editable=False)
    # When its webhook fan-out committed (accounts.webhooks.services.event_fan_out, with the WebhookFanout
    # marker), so that the relay tick finds the events still waiting for one through the small partial index
    # below instead of looking for events without a marker (an anti-join reading 3 days of events and every
    # marker, each 15 s). Null is "not known to be fanned out": events written by a release older than the
    # column (during a deploy, after a rollback) get null too, and the tick marks those it finds a marker for.
    fanned_out_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="event_org_newest"),
            models.Index(fields=["organization", "type", "-created_at", "-id"], name="event_org_type_newest"),
            models.Index(fields=["organization", "-position"], name="event_org_position"),
            models.Index(fields=["organization", "type", "-position"], name="event_org_type_position"),
            models.Index(
                fields=["organization", "created_at", "id"],
                name="event_org_unplaced",
                condition=models.Q(position__isnull=True),
            ),
            # The relay tick's: events of an organization with a live endpoint whose fan-out has not committed.
            models.Index(
                fields=["organization", "created_at"],
                name="event_org_fanout_pending",
                condition=models.Q(fanned_out_at__isnull=True),
            ),
            # Support's search by the id of a post, account or lease request (EventSubjectId).
            models.Index(EventSubjectId("data"), name="event_subject"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "position"],
                name="event_position_once_per_org",
                condition=models.Q(position__isnull=False),
            )
        ]

    def __str__(self):
        return f"{self.type} {self.id}"


class Platform(models.TextChoices):
    TIKTOK = "tiktok", "TikTok"
    INSTAGRAM = "instagram", "Instagram"


class PlatformIdentity(models.Model):
    """A platform user as seen by one organization (stored once per organization: the same handle
    connected by two organizations is two identities sharing nothing)."""

    id = PrefixedIdField(prefix="pi")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="identities")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    platform_user_id = models.CharField(max_length=128)
    # Instagram's other ids for the same person, which Meta's signed requests (deauthorize, data deletion) may
    # name instead of platform_user_id (/me's `user_id`): Meta does not say which one they carry for
    # Instagram Login. /me's `id` (app-scoped), and the code exchange's `user_id`; "" when not known (TikTok,
    # or an identity last connected before they were recorded: the next profile read gives the first).
    # Never shown to partners; kept by a data deletion, as platform_user_id is, to match a later request.
    app_scoped_id = models.CharField(
        "app-scoped id", max_length=128, blank=True, default="", db_default="", help_text="Instagram: /me's id."
    )
    token_user_id = models.CharField(
        "code exchange's user id",
        max_length=128,
        blank=True,
        default="",
        db_default="",
        help_text="Instagram: the user_id of the token answer at the last connect or reauth.",
    )
    handle = models.CharField(max_length=128, blank=True)
    display_name = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "platform identities"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "platform", "platform_user_id"], name="identity_once_per_org"
            )
        ]
        # A platform's webhook names the user, not the organization (TikTok's authorization.removed), by any of
        # its ids (Instagram's signed requests). Not partial (on the ids that are not ""): a prepared statement's
        # generic plan, its id a parameter, could not prove it may use such an index.
        indexes = [
            models.Index(fields=["platform", "platform_user_id"], name="identity_platform_user"),
            models.Index(fields=["platform", "app_scoped_id"], name="identity_app_scoped_id"),
            models.Index(fields=["platform", "token_user_id"], name="identity_token_user_id"),
        ]

    def __str__(self):
        # A data deletion request blanks the handle: an id written as one (`instagram:@1789…`) read as a username.
        if self.handle:
            return f"{self.platform}:@{self.handle}"
        return f"{self.platform} user {self.platform_user_id} (no handle)"


class SocialAccount(models.Model):
    """A binding of a platform identity to a project: what partners schedule to (`sa_…`).

    Tokens are encrypted (accounts.crypto); `token_version` grows on every token write so that a refresh
    that lost a race (TikTok rotates refresh tokens) cannot flip a freshly rotated account to
    reauth_required. A disconnected row is kept for the audit trail and never becomes live again."""

    class Kind(models.TextChoices):
        CONNECTED = "connected"
        LEASED = "leased"

    class Status(models.TextChoices):
        CONNECTED = "connected"
        REAUTH_REQUIRED = "reauth_required"
        DISCONNECTED = "disconnected"

    id = PrefixedIdField(prefix="sa")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="social_accounts")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="social_accounts")
    identity = models.ForeignKey(PlatformIdentity, on_delete=models.PROTECT, related_name="bindings")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CONNECTED)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.CONNECTED)

    access_token_enc = models.TextField(blank=True, editable=False)
    refresh_token_enc = models.TextField(blank=True, editable=False)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # How long the access token was issued for (the platform's expires_in): TikTok's live 24 h or 2 h, and the
    # refresh margin is a share of it (accounts/token_margin.py). Null: stored before this column existed.
    token_lifetime = models.DurationField(null=True, blank=True)
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    token_version = models.PositiveIntegerField(default=0)
    token_refreshed_at = models.DateTimeField(null=True, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    refresh_claimed_until = models.DateTimeField(null=True, blank=True)
    # Not before this time does the health tick take the account again: its check is queued (not yet done)
    # or failed for now (TikTok errors) and waits out a backoff. Without it, accounts whose checks keep
    # failing held the head of every (bounded) batch, and those behind them were never refreshed. Nullable:
    # the release still running while the column is added inserts rows without it.
    health_next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Not before these times does the metrics sync (scheduling.services.posts_sync_metrics) ask the platform
    # about the account's posts' metrics, or about their late TikTok post ids (the status endpoint, limited
    # apart: its throttling must not stop the metrics): the platform throttled those calls (its Retry-After)
    # or failed them for now. Without them, the sync asked again in its next batch and at the next beat.
    # Nullable: the release still running while the columns are added inserts rows without them.
    metrics_not_before = models.DateTimeField(null=True, blank=True, editable=False)
    post_ids_not_before = models.DateTimeField(null=True, blank=True, editable=False)
    scopes = models.CharField(max_length=512, blank=True)

    avatar_url = models.URLField(max_length=1024, blank=True)
    return_url = models.URLField(max_length=2048, blank=True)
    connected_at = models.DateTimeField(default=timezone.now)
    reauth_required_at = models.DateTimeField(null=True, blank=True)
    # Why it went reauth_required (the platform's answer, tokens blanked): for support, in the admin.
    reauth_reason = models.CharField(max_length=300, blank=True, default="", db_default="")
    disconnected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # One live binding of an identity per project; disconnected rows stay as history.
            models.UniqueConstraint(
                fields=["project", "identity"],
                condition=~models.Q(status="disconnected"),
                name="one_live_binding_per_project",
            ),
            models.CheckConstraint(
                condition=models.Q(status="disconnected", disconnected_at__isnull=False)
                | ~models.Q(status="disconnected"),
                name="disconnected_has_timestamp",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-created_at", "-id"], name="sa_project_newest"),
            models.Index(fields=["status", "token_expires_at"], name="sa_token_health"),
        ]

    def __str__(self):
        # The admin shows it (titles, links, "Recent actions") and copies it into LogEntry.object_repr for
        # good; a data deletion request rewrites those copies to this (accounts.services._admin_history_renamed).
        handle = self.identity.handle if self.identity_id else "?"
        return f"{self.id} ({self.platform} @{handle})" if handle else f"{self.id} ({self.platform}, no handle)"

    @property
    def access_token(self) -> str | None:
        from accounts.crypto import decrypt

        return decrypt(self.access_token_enc)

    @property
    def refresh_token(self) -> str | None:
        from accounts.crypto import decrypt

        return decrypt(self.refresh_token_enc)

    @property
    def is_live(self) -> bool:
        return self.status != self.Status.DISCONNECTED


class SocialAccountStatusChange(models.Model):
    """One status transition of a social account, appended in the transaction that makes it
    (accounts.services.social_account_status_record): the account's history for support. The account row keeps
    only the latest reauth reason, which the next needs_reauth overwrites and a reconnect clears; here every
    needs_reauth keeps its reason, and every transition what made it (`source`: a post, the health check, a
    reauth, a revoke by an API key or staff, a lease). Never updated nor deleted: shown read-only on the
    account's admin page, and its rows keep the account (PROTECT), as the account keeps its own row."""

    social_account = models.ForeignKey(SocialAccount, on_delete=models.PROTECT, related_name="status_changes")
    at = models.DateTimeField(default=timezone.now)
    from_status = models.CharField(
        max_length=20, choices=SocialAccount.Status.choices, blank=True, help_text="Empty: the account was created."
    )
    to_status = models.CharField(max_length=20, choices=SocialAccount.Status.choices)
    reason = models.CharField(max_length=300, blank=True)
    source = models.CharField(max_length=200, help_text="What made the change, as support reads it.")

    class Meta:
        verbose_name = "status change"
        ordering = ["at", "id"]

    def __str__(self):
        return f"{self.from_status or 'created'} → {self.to_status}"


class DataDeletionRequest(models.Model):
    """A platform's request to delete what Layers keeps about one of its users (Instagram's Data deletion
    request callback, which Meta requires of an app before review), and the confirmation code Layers answered
    it with. Meta shows the person the code and our status URL (/data-deletion/<code>), which reads this row.

    The erasure runs in the transaction that inserts the row, so a row is the proof that it was done
    (`completed_at`); `request_key` (the signed payload's digest) makes Meta's same request, sent again,
    answer the same code and change nothing more. `platform_user_id` is the id the request named (whichever of
    Instagram's ids Meta sent: PlatformIdentity.app_scoped_id says why there are several), kept as every
    identity of the user keeps its ids: it is no profile, and support needs it to answer Meta or the person
    about the request. Never updated nor deleted."""

    platform = models.CharField(max_length=16, choices=Platform.choices)
    platform_user_id = models.CharField(max_length=128)
    request_key = models.CharField(max_length=64, unique=True, editable=False)
    confirmation_code = models.CharField(max_length=32, unique=True, editable=False)
    # The request's own time (Meta's `issued_at`): a binding whose token was stored after it is a new consent.
    requested_at = models.DateTimeField()
    completed_at = models.DateTimeField(default=timezone.now)
    accounts_erased = models.PositiveIntegerField(default=0, help_text="Bindings whose tokens and picture went.")

    class Meta:
        indexes = [models.Index(fields=["platform", "platform_user_id"], name="deletion_platform_user")]

    def __str__(self):
        return f"{self.platform} data deletion {self.confirmation_code}"


class OAuthSession(models.Model):
    """One authorization attempt: the `state` handed to the platform and its outcome.

    `connect` and `reauth` are a partner's (an organization, a project, an API key, the partner's returnUrl).
    `pool` is Layers staff connecting a pool account of their own from the admin (leasing.admin): no
    organization, project or key — the pool belongs to no partner — but the pool account and the staff member
    who started it. It is this same row rather than a model of its own because the platform sends every
    consent back to the one callback URL with only the state: one table to claim the state in (the row lock
    that makes a replay `already_used`), one expiry, one retention purge. With no organization such a state
    is unknown to every partner's oauth-status (it is read by organization), and its return_url is the pool
    account's admin page, never a partner's. A database constraint keeps the two kinds apart.

    Its `pool_account` is the one model reference against DESIGN.md's downward order (`accounts` ← … ←
    `leasing`), taken knowingly: a leasing-side row holding the state would split the claim over two tables
    (or leave a pool state unknown to the callback), and with the foreign key a retired-then-deleted pool
    account takes its pending consent with it."""

    class Purpose(models.TextChoices):
        CONNECT = "connect"
        REAUTH = "reauth"
        POOL = "pool"

    class Status(models.TextChoices):
        PENDING = "pending"
        EXCHANGING = "exchanging"  # callback received, talking to the platform (shown as pending)
        COMPLETED = "completed"
        FAILED = "failed"

    state = PrefixedIdField(prefix="st")
    # Null only for `pool` sessions (see the class docstring and the oauth_session_owner constraint).
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    platform = models.CharField(max_length=16, choices=Platform.choices)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    return_url = models.URLField(max_length=2048)
    usage_note = models.CharField(max_length=500, blank=True)
    scopes = models.CharField(max_length=512, blank=True)
    social_account = models.ForeignKey(
        SocialAccount, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error_code = models.CharField(max_length=32, blank=True)
    # What the platform said when the connect failed on its side: the `error`, `error_reason` (Instagram's) and
    # `error_description` it sent the customer back with, or its refusal of the code exchange or profile fetch.
    # For ops (the admin): the partner gets only `error_code`, API.md's fixed codes. Redacted and bounded
    # (services._platform_text): never a token, code or state. db_default: the release still serving while this
    # column is added inserts sessions without it.
    platform_message = models.TextField("what the platform said", blank=True, default="", db_default="", editable=False)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    # When a callback claimed the state (pending → exchanging): EXCHANGE_DEADLINE counts from it. Null on
    # rows claimed by a release that did not record it (and on unclaimed ones).
    exchange_started_at = models.DateTimeField(null=True, blank=True)
    # `pool` sessions only: the pool account being connected, and who started it (its audit trail's actor, and
    # the only user whose signed-in browser the callback completes it for: services.oauth_callback).
    pool_account = models.ForeignKey(
        "leasing.PoolAccount", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    staff_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "OAuth session"
        constraints = [
            # A partner's session has its organization and project and no pool account; a staff pool connect
            # the reverse. Neither can be read as the other (a pool state in a partner's oauth-status).
            models.CheckConstraint(
                condition=(
                    models.Q(purpose="pool", pool_account__isnull=False)
                    & models.Q(organization__isnull=True, project__isnull=True)
                    | (
                        ~models.Q(purpose="pool")
                        & models.Q(pool_account__isnull=True, organization__isnull=False, project__isnull=False)
                    )
                ),
                name="oauth_session_owner",
            )
        ]

    def __str__(self):
        # Never the whole state (a bearer secret until used): this label shows up in admin pages and logs.
        return f"{self.platform} {self.purpose} session {self.short_state}…"

    # How much of a state the back-office shows, the logs name and the admin's search finds it by ("st_" and
    # 7 characters; config.logfilters.OAUTH_STATE cuts states in logged paths to the same).
    SHORT_STATE_LENGTH = 10

    @property
    def short_state(self) -> str:
        return self.state[: self.SHORT_STATE_LENGTH]

    # How long after its claim (exchange_started_at) a callback may still be completing the state: a few
    # platform calls, each bounded by 2 × LAYERS_PLATFORM_TIMEOUT. A state still exchanging after that was left
    # by a callback whose process died (a deploy, the OOM killer): it reads failed with platform_error, never
    # expired (the customer did consent), while the customer retrying the callback is told already_used.
    # Counted from the claim, not from expires_at: a partner's "connecting…" would otherwise spin for the rest
    # of the state's 30 minutes. A row claimed without a recorded start counts from expires_at (the claim is
    # only made before it).
    EXCHANGE_DEADLINE = timedelta(minutes=5)

    def public_status(self, now=None) -> str:
        now = now or timezone.now()
        if self.status in (self.Status.COMPLETED, self.Status.FAILED):
            return self.status
        if self.status == self.Status.EXCHANGING:
            # A callback is completing it (shown as pending), unless it can no longer be running.
            started = self.exchange_started_at or self.expires_at
            return "failed" if now >= started + self.EXCHANGE_DEADLINE else "pending"
        return "expired" if now >= self.expires_at else "pending"

    def public_error_code(self, now=None) -> str | None:
        """The failure code oauth-status shows when public_status() is failed (an abandoned exchange has none
        stored: platform_error)."""
        if self.public_status(now) != "failed":
            return None
        return self.error_code or "platform_error"


class OnboardingStep(models.Model):
    """The organization's onboarding checklist (`tiktok.connected`, `instagram.connected`): reached once."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="onboarding_steps")
    key = models.CharField(max_length=64)
    social_account = models.ForeignKey(SocialAccount, null=True, on_delete=models.SET_NULL, related_name="+")
    completed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="onboarding_step_once")]

    def __str__(self):
        return self.key


class CallGate(models.Model):
    """Calls in flight to one outside receiver (a webhook endpoint, an organization's endpoints, a managed
    provider) and how its last calls went: the state of accounts.callgate, which keeps one slow or dead
    receiver from holding every worker thread. Locked row by row (SELECT … FOR UPDATE) by the callers."""

    key = models.CharField(primary_key=True, max_length=100)
    # holder (a delivery or post id) → end of its lease (unix seconds): a holder that dies without leaving
    # stops counting when its lease ends.
    slots = models.JSONField(default=dict, blank=True)
    failures = models.PositiveIntegerField(default=0, help_text="Consecutive calls that got no answer.")
    down_until = models.DateTimeField(null=True, blank=True, help_text="End of the cool-off; no call before.")

    class Meta:
        verbose_name = "outbound call gate"

    def __str__(self):
        return self.key
