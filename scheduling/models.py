from django.db import models
from django.utils import timezone

from accounts.models import Organization, Project, SocialAccount
from config.api.ids import PrefixedIdField


class LayerKind(models.TextChoices):
    ACCOUNT_HEALTH_MONITOR = "account_health_monitor", "Account Health Monitor"
    SOCIAL_DISTRIBUTION = "social_distribution", "Social Distribution"
    SOCIAL_ENGAGEMENT = "social_engagement", "Social Engagement"
    ACCOUNT_WARMUP = "account_warmup", "Account Warmup"
    SOCIAL_CONTENT = "social_content", "Social Content"


ONBOARDING_TEMPLATE = "Social Account Onboarding"


class LayerTemplate(models.Model):
    """A system template: the layers every account (or project) gets. `layers` is a list of
    {"kind", "name"}; the "Social Account Onboarding" template is created by a data migration."""

    name = models.CharField(max_length=128, unique=True)
    layers = models.JSONField(default=list)
    is_system = models.BooleanField(default=True)

    def __str__(self):
        return self.name


class Layer(models.Model):
    """A distribution layer: per account (health, distribution, engagement, warmup) or per project
    (social content). An account without its four layers is skipped by the posts sync and cannot
    publish until they are provisioned."""

    id = PrefixedIdField(prefix="lay")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="layers")
    social_account = models.ForeignKey(
        SocialAccount, null=True, blank=True, on_delete=models.CASCADE, related_name="layers"
    )
    template = models.ForeignKey(LayerTemplate, null=True, blank=True, on_delete=models.SET_NULL)
    kind = models.CharField(max_length=32, choices=LayerKind.choices)
    name = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["social_account", "kind"],
                condition=models.Q(social_account__isnull=False),
                name="one_layer_kind_per_account",
            ),
            models.UniqueConstraint(
                fields=["project", "kind"],
                condition=models.Q(social_account__isnull=True),
                name="one_project_layer_kind",
            ),
        ]

    def __str__(self):
        return self.name


class MediaType(models.TextChoices):
    VIDEO = "video"
    IMAGE = "image"
    CAROUSEL = "carousel"


class ContentContainer(models.Model):
    """What to post: media URLs and a caption, scheduled to one or more accounts of the project."""

    id = PrefixedIdField(prefix="cnt")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="containers")
    media_type = models.CharField(max_length=16, choices=MediaType.choices)
    media_urls = models.JSONField(default=list)
    caption = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.id} ({self.media_type})"


class ManagedProvider(models.Model):
    """A project's managed-distribution provider (mode `managed`), configured by Layers staff. Posts are
    dispatched to it as a signed POST; the secret is encrypted like platform tokens."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="managed_provider")
    name = models.CharField(max_length=128)
    endpoint_url = models.URLField(max_length=1024)
    secret_enc = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return f"{self.name} ({self.project})"

    @property
    def secret(self) -> str | None:
        from accounts.crypto import decrypt

        return decrypt(self.secret_enc)


class CancelReason(models.TextChoices):
    """Why a post was canceled by someone other than the partner (ScheduledPost.cancel_reason)."""

    ACCOUNT_REVOKED = "account_revoked", "Its account was revoked"
    LEASE_RELEASED = "lease_released", "Its leased account was released"
    OFFBOARDED = "offboarded", "The organization was off-boarded"
    STAFF = "staff", "Canceled by Layers staff"


class ScheduledPost(models.Model):
    """One container to one account at one time: the unit the dispatcher claims and publishes.

    At most once on the platform: a post moves queued → publishing with a conditional update before any
    platform call; `publish_attempted_at` is written just before the call that creates the post, and
    `publish_id` as soon as the platform answers. A post found in `publishing` after its claim expired is
    resolved by asking the platform (publish_id known); if the creating call may have reached the platform
    without a usable answer, the post fails PLATFORM_UNAVAILABLE for ops or the partner to check and retry —
    never by posting again. The same fields say which of two runs on one post (a redelivered message, a late
    worker) may still write it: `claimed_until`, rewritten by every claim, until the point of no return, then
    the one run's `publish_attempted_at` mark, then `publish_id` (services._still_ours)."""

    class Mode(models.TextChoices):
        PUBLISH = "publish"
        DRAFT = "draft"
        MANAGED = "managed"

    class Status(models.TextChoices):
        QUEUED = "queued"
        PUBLISHING = "publishing"
        PUBLISHED = "published"
        FAILED = "failed"
        CANCELED = "canceled"

    id = PrefixedIdField(prefix="sp")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="scheduled_posts")
    container = models.ForeignKey(ContentContainer, on_delete=models.PROTECT, related_name="scheduled_posts")
    social_account = models.ForeignKey(SocialAccount, on_delete=models.PROTECT, related_name="scheduled_posts")
    mode = models.CharField(max_length=16, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    scheduled_for = models.DateTimeField()
    # When the dispatcher may next pick the post: scheduled_for at first, later after a retry backoff.
    due_at = models.DateTimeField()
    placement = models.CharField(max_length=16, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Runs that stopped (worker died, or raised) before anything reached the platform, which the resolver put
    # back in the queue. `attempts` counts every run, these included; the platform's own "not now" is retried
    # for a window of time, its backoff growing with attempts - requeues (services._platform_attempts), and its
    # "gave up after N attempts" counting those: runs lost in deploys are not the platform's refusals.
    requeues = models.PositiveSmallIntegerField(default=0, db_default=0)
    claimed_until = models.DateTimeField(null=True, blank=True)
    publish_attempted_at = models.DateTimeField(null=True, blank=True)
    publish_id = models.CharField(max_length=128, blank=True)
    # Instagram publishes a container that it has to fetch and process first (seconds for an image, minutes
    # for a reel). The container is made ahead of the post's time (services.post_prepare), so that at its
    # time only media_publish is left. It is not a post yet: a canceled post leaves an unused container,
    # which Instagram drops after 24 h. prepare_claimed_at marks a post taken for that, prepared or not.
    prepare_claimed_at = models.DateTimeField(null=True, blank=True)
    # db_default too: a release still running while this column's migration is applied inserts without it.
    prepared_publish_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    next_check_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    external_id = models.CharField(max_length=128, blank=True)
    external_url = models.URLField(max_length=1024, blank=True)
    error_code = models.CharField(max_length=32, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    # Who or what canceled it, for support: "partner (API key …)", "staff <username>", "account revoked by …",
    # "lease released by …" (services.post_cancel, posts_cancel_for_account). db_default: the release still
    # serving while this column's migration runs inserts posts without it.
    canceled_by = models.CharField(max_length=300, blank=True, default="", db_default="")
    # Why, as data: what the partner is told (serializers.post_error) — canceled_by is free text naming staff
    # and API keys, for support only. Blank for the partner's own DELETE (it knows), and for posts canceled
    # before this column existed or by the release still serving while its migration ran (nothing recorded:
    # their error stays null rather than guessed from canceled_by). Written by services._canceled_fields.
    cancel_reason = models.CharField(
        max_length=32, choices=CancelReason.choices, blank=True, default="", db_default="", editable=False
    )
    views = models.BigIntegerField(null=True, blank=True)
    likes = models.BigIntegerField(null=True, blank=True)
    comments = models.BigIntegerField(null=True, blank=True)
    shares = models.BigIntegerField(null=True, blank=True)
    metrics_synced_at = models.DateTimeField(null=True, blank=True)
    # When the metrics sync last asked the platform about this post, answered or not: the sync takes the
    # least recently asked first, so posts the platform no longer returns (deleted) or whose account's
    # calls fail go to the back of the line instead of filling every run's batch.
    metrics_attempted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Written when the row is created, never after: every state change is a conditional .update(), which
    # does not move an auto_now column. Not shown in the admin for that reason (the attempts, canceled_at and
    # published_at say when things happened); kept because the release still serving during a deploy
    # inserts it.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The dispatcher's claim: only queued rows, by due time (a partial index stays small).
            models.Index(fields=["due_at"], condition=models.Q(status="queued"), name="sp_due_queued"),
            # Its share-out between organizations (services.posts_claim_due): each one's soonest due posts.
            models.Index(
                fields=["organization", "due_at"],
                condition=models.Q(status="queued"),
                name="sp_org_due_queued",
            ),
            # The resolver: publishing rows waiting for a status check or whose claim expired.
            models.Index(fields=["next_check_at"], condition=models.Q(status="publishing"), name="sp_publishing_check"),
            # Its share-out between organizations (services.posts_claim_for_resolution): each one's soonest.
            models.Index(
                fields=["organization", "next_check_at"],
                condition=models.Q(status="publishing"),
                name="sp_org_check_publishing",
            ),
            # The partner's list of a project's posts (selectors.scheduled_post_list), newest first, and its
            # filters, each read in the list's order from its own range: a page reads a page of rows, however
            # rare the status or small the account among the project's posts (walking the project's posts
            # and filtering read all of them to find a page of its few failed ones).
            models.Index(fields=["project", "-created_at", "-id"], name="sp_project_newest"),
            models.Index(fields=["project", "status", "-created_at", "-id"], name="sp_project_status_newest"),
            models.Index(fields=["social_account", "-created_at", "-id"], name="sp_account_newest"),
            # An account's posts of a status: its queued posts, counted by posts_schedule's cap and the revoke
            # page, canceled by posts_cancel_for_account. With both of the list's filters the planner takes
            # the narrower of this and the two above. Kept as it is rather than extended by (-created_at, -id)
            # to serve that case exactly: deduplicated, it is a twentieth of their size (3 MB against 45-50
            # MB at 400,000 posts), and the narrower of the three reads a few pages already (BENCHMARKS.md).
            models.Index(fields=["social_account", "status"], name="sp_account_status"),
            models.Index(
                fields=["project", "-published_at", "-id"], condition=models.Q(status="published"), name="sp_published"
            ),
            # The metrics sync and the post id follow-up: posts we published, recent ones only (a time window).
            models.Index(
                fields=["published_at"],
                condition=models.Q(status="published", mode="publish"),
                name="sp_published_recent",
            ),
            # The admin's "scheduled for" filter (Today, Last month…): one day's or month's posts of all time.
            models.Index(fields=["scheduled_for"], name="sp_scheduled_for"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(status="published") | models.Q(published_at__isnull=False),
                name="published_has_timestamp",
            ),
        ]

    def __str__(self):
        return f"{self.id} ({self.mode}, {self.status})"


class ScheduledPostAttempt(models.Model):
    """One attempt at publishing a post, for support: written once, when the attempt ends, by the run that
    ended it, in the transaction of the post's own transition (a row exists exactly when the transition
    happened). Kept as long as the post (cascade).

    `number` is the post's `attempts` for that try (a staff retry starts it again from 1; its own row, which
    is no attempt, has none). `started_at` is the claim that began it (the post's due_at when claimed); an
    Instagram media_publish asked again after a throttle continues that claim and shows its start.
    `publish_id` is the platform's id as the run knew it, kept here when the post's own is cleared (a retry)."""

    class Outcome(models.TextChoices):
        PUBLISHED = "published", "published"
        FAILED = "failed", "failed"
        RETRY = "retry", "retry later"
        REQUEUED = "requeued", "requeued: stopped before the platform"
        STAFF_RETRY = "staff_retry", "queued again by staff"

    # No index of its own: the one below, (post, id), finds a post's attempts in the order they are shown.
    post = models.ForeignKey(ScheduledPost, on_delete=models.CASCADE, related_name="attempt_log", db_index=False)
    number = models.PositiveSmallIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error_code = models.CharField(max_length=32, blank=True)
    message = models.CharField(max_length=500, blank=True)
    publish_id = models.CharField(max_length=128, blank=True)
    # Whose answer ended the attempt, for the admin's "Platforms now" (scheduling/platform_status.py): "tiktok"
    # or "instagram" (the account's platform), or "managed" (the project's provider). Null when no platform's
    # answer ended it: a run that stopped (its worker died or raised), Layers giving up on its own (24 hours of
    # processing, runs that kept stopping), a check of ours before any call, a staff retry. Those fail
    # PLATFORM_UNAVAILABLE too, and must not read as the platform refusing. Null as well on the attempts written
    # before it existed, and by the release still serving during its deploy.
    platform = models.CharField(max_length=16, null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "publishing attempt"
        ordering = ["id"]
        indexes = [
            models.Index(fields=["post", "id"], name="spa_post_attempts"),
            # "Platforms now": the calls a platform refused for now, and its publishes, by platform then time.
            # A platform's latest is the first entry of its own range, and a window's count reads that window's
            # entries only, whatever the other platforms did meanwhile. Partial and disjoint: an attempt enters
            # one of them at most, and the refusals' stays small while the platforms are up.
            models.Index(
                fields=["platform", "finished_at"],
                condition=models.Q(
                    platform__isnull=False,
                    outcome__in=["retry", "failed"],
                    error_code__in=["PLATFORM_UNAVAILABLE", "RATE_LIMITED"],
                ),
                name="spa_refused_by_platform",
            ),
            models.Index(
                fields=["platform", "finished_at"],
                condition=models.Q(platform__isnull=False, outcome="published"),
                name="spa_published_by_platform",
            ),
        ]

    def __str__(self):
        return f"attempt {self.number}" if self.number else str(self.get_outcome_display())
