from django.conf import settings
from django.db import models
from django.utils import timezone

from config.api.ids import PrefixedIdField


class Organization(models.Model):
    """A partner company. Everything an API key can see hangs off one organization."""

    id = PrefixedIdField(prefix="org")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

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
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_key_per_org")
        ]


class Event(models.Model):
    """The outbox: one row per change a partner may hear about, written in the same transaction as the
    change (accounts.services.event_record), delivered to webhooks after commit, listed by GET /v1/events."""

    id = PrefixedIdField(prefix="evt")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="event_org_newest"),
            models.Index(fields=["organization", "type", "-created_at", "-id"], name="event_org_type_newest"),
        ]

    def __str__(self):
        return f"{self.type} {self.id}"
