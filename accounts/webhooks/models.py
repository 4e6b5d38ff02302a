import logging
from datetime import datetime

from django.db import models
from django.utils import timezone

from accounts.models import Event, Organization
from config.api.ids import PrefixedIdField

log = logging.getLogger(__name__)


class WebhookEndpoint(models.Model):
    """A partner URL subscribed to some event types (`we_…`).

    The signing secret must be recoverable to sign, so it is encrypted (accounts.crypto), never hashed.
    After a rotation the previous secret keeps signing next to the new one until
    `previous_secret_expires_at`, so a partner can deploy the new secret without dropping deliveries.
    A deleted endpoint keeps its row (soft delete) so that its deliveries stay visible to staff."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        DISABLED = "disabled"

    class DisabledReason(models.TextChoices):
        GONE = "gone", "The receiver answered 410 Gone"
        STAFF = "staff", "Disabled by Layers staff"
        PARTNER = "partner", "Disabled by the partner (PATCH enabled=false)"

    id = PrefixedIdField(prefix="we")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    events = models.JSONField(default=list, help_text="Event types this endpoint receives.")
    # The lists it had before the partner changed `events` (PATCH), oldest first, each with when it ended:
    # [{"until": ISO time, "events": [...]}]. An event goes by the list of when it was recorded (events_at), as
    # it goes by the endpoint's creation and enable times, however late its fan-out runs (a backlogged queue, the
    # relay tick after a lost one). Null: never changed (or only by a release older than this field).
    events_before = models.JSONField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    disabled_reason = models.CharField(max_length=16, choices=DisabledReason.choices, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    # When staff or the partner (PATCH) last enabled it again (endpoint_enable): it receives the events from then
    # on, as it receives those from its creation on (event_fan_out's subscribers). Null: never disabled and enabled
    # again.
    enabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_enc = models.TextField(editable=False)
    previous_secret_enc = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "webhook endpoint"
        indexes = [models.Index(fields=["organization", "-created_at", "-id"], name="we_org_newest")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status="active", disabled_at__isnull=True)
                | models.Q(status="disabled", disabled_at__isnull=False),
                name="we_disabled_has_timestamp",
            )
        ]

    def __str__(self):
        return f"{self.url} ({self.id})"

    def events_at(self, moment) -> list[str]:
        """The event types it subscribed to at `moment` (an event's created_at). A change at the event's very
        moment counts, as an enable does (enabled_at <= created_at)."""
        for change in self.events_before or ():
            if moment < datetime.fromisoformat(change["until"]):
                return change["events"]
        return self.events

    @property
    def is_live(self) -> bool:
        """Deliveries go out only to an active, not deleted endpoint."""
        return self.status == self.Status.ACTIVE and self.deleted_at is None

    def signing_secrets(self, now) -> list[str]:
        """The secrets that sign a request sent at `now`: the current one, then the previous one while its
        rotation overlap lasts. A secret that no longer decrypts (its key was removed from LAYERS_TOKEN_KEYS
        before `rotate_token_keys` re-encrypted it) is skipped and logged: the partner then rejects the
        requests as unsigned, and ops must be able to tell why from the logs (the id, never the secret)."""
        from accounts.crypto import decrypt

        out = []
        current = decrypt(self.secret_enc)
        if current:
            out.append(current)
        else:
            log.error(
                "webhook endpoint %s: its signing secret no longer decrypts (encryption key removed?); its "
                "deliveries go out without a valid signature until the partner rotates the secret",
                self.pk,
            )
        if self.previous_secret_enc and self.previous_secret_expires_at and now < self.previous_secret_expires_at:
            previous = decrypt(self.previous_secret_enc)
            if previous:
                out.append(previous)
            else:
                log.warning("webhook endpoint %s: its previous signing secret no longer decrypts; not signing", self.pk)
        return out


class WebhookFanout(models.Model):
    """Marks an event as fanned out into deliveries. Written in the same transaction as the deliveries, so
    an event without a marker is exactly an event whose fan-out never committed (the worker died or the
    broker was down): the periodic relay tick fans those out. It finds them by the event's own
    `fanned_out_at`, set with the marker (an index holds the events without it), not by looking for events
    without a marker, which read the whole table at every tick."""

    event = models.OneToOneField(Event, on_delete=models.CASCADE, primary_key=True, related_name="webhook_fanout")
    fanned_out_at = models.DateTimeField(default=timezone.now)
    deliveries = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "webhook fan-out"


class WebhookDelivery(models.Model):
    """One event to one endpoint (`whd_…`), retried until a 2xx or the retry window ends.

    `body` is the exact JSON sent: stored once so every attempt carries the same bytes. While `sending`,
    the relay holding the claim may send until `lease_until`; a relay that dies before recording its result
    leaves the row `sending`, and once the lease expires the next tick claims and sends it again (same
    event id: at-least-once). `attempts` is also the claim token: a result is recorded only by the relay
    whose claim is still current.

    An attempt is claimed by the task that sends it, when it starts, never by the tick that queues it: a
    send waiting in a backlogged queue is not an attempt. `queued_at` keeps the tick from queueing copies
    of a send that is still waiting. `attempts` counts every attempt of the delivery (Layers-Delivery-
    Attempt); the backoff counts those of the current retry window, from `window_first_attempt`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed"
        CANCELED = "canceled"

    id = PrefixedIdField(prefix="whd")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+")
    body = models.TextField(editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Attempts made since the delivery was created, resends included (its requests' number)."
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the relay tick last queued a send of it, not yet started (cleared when one starts).",
    )
    lease_until = models.DateTimeField(null=True, blank=True)
    give_up_at = models.DateTimeField(
        null=True, blank=True, help_text="End of the retry window (first attempt of the window + 3 days)."
    )
    window_first_attempt = models.PositiveIntegerField(
        default=1,
        db_default=1,  # the release still serving while this migrates inserts deliveries without it
        editable=False,
        help_text="Number of the attempt the current retry window began with (a staff resend starts a new one).",
    )
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # Fan-out is idempotent: an event reaches an endpoint through one delivery row, however often
            # the fan-out runs.
            models.UniqueConstraint(fields=["event", "endpoint"], name="whd_once_per_endpoint"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], condition=models.Q(status="pending"), name="whd_due"),
            models.Index(fields=["lease_until"], condition=models.Q(status="sending"), name="whd_leased"),
            # Whether an organization has a send queued and not started (services._sends_to_start): a few rows.
            models.Index(
                fields=["endpoint"],
                condition=models.Q(status="pending", queued_at__isnull=False),
                name="whd_queued",
            ),
            models.Index(fields=["endpoint", "-created_at"], name="whd_endpoint_newest"),
            # The event purge keeps an event while a delivery of it is still to be sent (_expired_events): a
            # few rows, where the event_id index holds every delivery kept (0.1 to 0.45 s per batch at 300k).
            models.Index(
                fields=["event"], condition=models.Q(status__in=["pending", "sending"]), name="whd_unfinished_event"
            ),
        ]

    def __str__(self):
        return f"{self.id} ({self.status})"


class WebhookDeliveryAttempt(models.Model):
    """One claim of a delivery: created when claimed, completed when the result is recorded. An attempt
    that never got a result is the trace of a relay that died mid-send."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = "webhook delivery attempt"
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="whd_attempt_number_once")]

    def __str__(self):
        return f"attempt {self.number}"
