from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from accounts.models import Organization, Project, SocialAccount, api_key_label
from config.api.ids import PrefixedIdField

# A typo guard on monthly prices ($100,000 a month), far below the column's limit: a price past it is refused
# where it is entered (admin form, CSV import, add_pool_accounts) rather than stored.
MAX_MONTHLY_PRICE_CENTS = 10_000_000


class PoolAccount(models.Model):
    """A warmed TikTok account owned by Layers, leased to partners. Its tokens are encrypted like any
    platform token; while leased they live on the partner-side SocialAccount (one copy, so TikTok's
    rotating refresh token is never held twice) and come back here on release."""

    class Status(models.TextChoices):
        AVAILABLE = "available"
        RESERVED = "reserved"  # picked for a request, being bound (the request is `provisioning`)
        LEASED = "leased"
        RETIRED = "retired"

    class Warmup(models.TextChoices):
        WARMING = "warming"
        WARM = "warm"

    id = PrefixedIdField(prefix="pool")
    platform = models.CharField(max_length=16, default="tiktok", editable=False)
    handle = models.CharField(max_length=64)
    platform_user_id = models.CharField(max_length=128)
    display_name = models.CharField(max_length=200, blank=True)
    access_token_enc = models.TextField(blank=True, editable=False)
    refresh_token_enc = models.TextField(blank=True, editable=False)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    # The access token's lifetime as TikTok issued it (accounts.models.SocialAccount.token_lifetime).
    token_lifetime = models.DurationField(null=True, blank=True)
    refresh_expires_at = models.DateTimeField(null=True, blank=True)
    # Until when a token refresh of this account is underway (leasing.services.pool_account_refresh): TikTok
    # rotates the refresh token, so only one refresh at a time may send it. Null: none underway.
    refresh_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Before when TikTok told us (Retry-After) not to ask for this account's refresh again: the refresh tick
    # leaves it out until then (leasing.services.pool_accounts_due_for_refresh). Null or past: no such wait.
    refresh_not_before = models.DateTimeField(null=True, blank=True, editable=False)
    vertical = models.CharField(max_length=100, db_index=True)
    languages = models.JSONField(default=list, help_text='BCP 47 tags, e.g. ["en-US", "en-GB"]')
    geos = models.JSONField(default=list, help_text='ISO 3166-1 alpha-2 codes, e.g. ["US", "CA"]')
    audience_notes = models.TextField(blank=True)
    warmup_state = models.CharField(max_length=16, choices=Warmup.choices, default=Warmup.WARM)
    monthly_price_cents = models.PositiveIntegerField(validators=[MaxValueValidator(MAX_MONTHLY_PRICE_CENTS)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AVAILABLE, db_index=True)
    status_note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["platform", "platform_user_id"], name="pool_account_once"),
            models.CheckConstraint(condition=models.Q(monthly_price_cents__gte=0), name="pool_price_not_negative"),
        ]

    def __str__(self):
        return f"@{self.handle} ({self.vertical})"

    @property
    def price_display(self) -> str:
        return f"${self.monthly_price_cents / 100:,.2f}"

    @property
    def access_token(self) -> str | None:
        from accounts.crypto import decrypt

        return decrypt(self.access_token_enc)

    @property
    def refresh_token(self) -> str | None:
        from accounts.crypto import decrypt

        return decrypt(self.refresh_token_enc)


class LeaseRequest(models.Model):
    """A partner's request for warmed accounts in a niche, fulfilled by Layers staff."""

    class Status(models.TextChoices):
        REQUESTED = "requested"
        IN_REVIEW = "in_review"
        PROVISIONING = "provisioning"
        ASSIGNED = "assigned"
        PARTIAL = "partial"
        REJECTED = "rejected"
        FAILED = "failed"

    OPEN = (Status.REQUESTED, Status.IN_REVIEW, Status.FAILED)
    # What staff may assign accounts to: the open requests, and a `partial` one, topped up with the rest of
    # its `count` later (it is not open: it has leases, so it is neither taken back into review nor rejected).
    ASSIGNABLE = (*OPEN, Status.PARTIAL)

    id = PrefixedIdField(prefix="lreq")
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="lease_requests")
    count = models.PositiveSmallIntegerField()
    vertical = models.CharField(max_length=100)
    audience = models.CharField(max_length=500, blank=True)
    language = models.CharField(max_length=35)
    geos = models.JSONField(default=list)
    note = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED, db_index=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    review_started_at = models.DateTimeField(null=True, blank=True)
    rejection_reason = models.CharField(max_length=1000, blank=True)
    failure_reason = models.CharField(max_length=1000, blank=True)
    submitted_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "-submitted_at", "-id"], name="lreq_project_newest")]

    def __str__(self):
        return f"{self.id} ({self.count} × {self.vertical}, {self.status})"


class Lease(models.Model):
    """One pool account leased to one project, bound as a `kind: leased` social account. Live while
    released_at is null; billing charges it per period from assigned_at until it is released."""

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="leases")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="leases")
    request = models.ForeignKey(LeaseRequest, on_delete=models.PROTECT, related_name="leases")
    pool_account = models.ForeignKey(PoolAccount, on_delete=models.PROTECT, related_name="leases")
    social_account = models.OneToOneField(SocialAccount, on_delete=models.PROTECT, related_name="lease")
    monthly_price_cents = models.PositiveIntegerField()
    # The pool account's handle when it was assigned. Charges and finance's monthly report name the account
    # by it: ops may rename the pool account later, and what a partner was billed for must not change.
    # db_default: the release still running while the column is added inserts leases without it.
    handle = models.CharField(max_length=64, default="", db_default="")
    assigned_at = models.DateTimeField(default=timezone.now)
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set once the lease is released and every month it started before its release is charged: billing has
    # nothing more to do with it. The renewal job reads only the leases where it is not (live ones, and a
    # released one whose last month is unsettled), through the lease_charges_open index, never the released
    # history, which only grows. Set by billing (the release's settlement, or the job settling it later),
    # only on released leases: a charge of a live lease writes nothing here.
    charges_settled = models.BooleanField(default=False, db_default=False, editable=False)

    class Meta:
        constraints = [
            # The promise "an account is never leased twice at once", held by the database itself.
            models.UniqueConstraint(
                fields=["pool_account"],
                condition=models.Q(released_at__isnull=True),
                name="one_live_lease_per_pool_account",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-assigned_at", "-social_account"], name="lease_project_newest_sa"),
            # The renewal job's pick (in id order): leases that can still owe a month.
            models.Index(fields=["id"], condition=models.Q(charges_settled=False), name="lease_charges_open"),
        ]

    def __str__(self):
        return f"lease of {self.pool_account} to {self.project}"


class LeaseAction(models.Model):
    """Audit trail of every staff (or automation) action on requests and leases."""

    request = models.ForeignKey(LeaseRequest, null=True, blank=True, on_delete=models.CASCADE, related_name="actions")
    lease = models.ForeignKey(Lease, null=True, blank=True, on_delete=models.CASCADE, related_name="actions")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=32)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.action} by {self.by}"

    @property
    def by(self) -> str:
        """Who acted, as ops read it: the staff member; else the partner's API key the call came through (the
        `api_key` the services record in `detail`: its id, name and prefix, never the key); else automation
        (a command, the recovery of an interrupted assignment)."""
        if self.actor_id:
            return str(self.actor)
        key = self.detail.get("api_key") if isinstance(self.detail, dict) else None
        if isinstance(key, dict):
            label = api_key_label(key_id=key.get("id", ""), name=key.get("name", ""), prefix=key.get("prefix", ""))
            return f"partner ({label})"
        return "automation"
