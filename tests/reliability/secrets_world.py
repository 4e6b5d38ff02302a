"""One of every secret the project stores, made the way production makes them (OAuth connect, the pool
command, the webhook API with an Idempotency-Key, a secret rotation, the ops admin's provider form, a staff
member's TOTP and recovery codes), and a way to read each back through the code that uses it."""

import io
import json
from dataclasses import dataclass, field

from allauth.mfa.adapter import get_adapter as mfa_adapter
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from accounts import crypto
from accounts.models import IdempotencyKey, SocialAccount
from accounts.webhooks.models import WebhookEndpoint
from leasing.models import PoolAccount
from scheduling.models import ManagedProvider
from tests.accounts.oauth_helpers import connected_account

HOOK_URL = "https://93.184.216.34/layers/hooks"  # a public address literal: nothing is ever sent to it
IDEMPOTENCY_KEY = "create-hook-1"


@dataclass
class World:
    tenant: object
    account_ids: list[str]
    pool_ids: list[str]
    provider_id: int
    endpoint_id: str
    staff_id: int
    raw_api_key: str
    endpoint_body: dict = field(default_factory=dict)

    def plaintexts(self) -> dict[str, str | None]:
        """name → the secret as the code that uses it reads it now."""
        out: dict[str, str | None] = {}
        for account in SocialAccount.objects.filter(pk__in=self.account_ids).order_by("pk"):
            out[f"{account.pk} access token"] = account.access_token
            if account.refresh_token_enc:
                out[f"{account.pk} refresh token"] = account.refresh_token
        for pool in PoolAccount.objects.filter(pk__in=self.pool_ids).order_by("pk"):
            out[f"pool {pool.pk} access token"] = pool.access_token
            out[f"pool {pool.pk} refresh token"] = crypto.decrypt(pool.refresh_token_enc)
        out["managed provider secret"] = ManagedProvider.objects.get(pk=self.provider_id).secret
        endpoint = WebhookEndpoint.objects.get(pk=self.endpoint_id)
        current, previous = (endpoint.signing_secrets(timezone.now()) + [None, None])[:2]
        out["webhook secret"], out["previous webhook secret"] = current, previous
        replay = self.tenant.client.post(
            "/v1/webhook-endpoints", self.endpoint_body, format="json", HTTP_IDEMPOTENCY_KEY=IDEMPOTENCY_KEY
        )
        out["webhook secret shown again by an Idempotency-Key replay"] = replay.json().get("secret")
        adapter = mfa_adapter()
        for authenticator in Authenticator.objects.filter(user_id=self.staff_id).order_by("type"):
            if authenticator.type == Authenticator.Type.TOTP:
                out["staff TOTP secret"] = adapter.decrypt(authenticator.data["secret"])
            else:
                out["staff recovery-code seed"] = adapter.decrypt(authenticator.data["seed"])
        return out

    def stored(self) -> dict[str, str]:
        """The raw stored forms (what a dump holds), for 'changed by the rotation' checks."""
        raw: dict[str, str] = {}
        for account in SocialAccount.objects.filter(pk__in=self.account_ids):
            raw[f"{account.pk} access"], raw[f"{account.pk} refresh"] = (
                account.access_token_enc,
                account.refresh_token_enc,
            )
        for pool in PoolAccount.objects.filter(pk__in=self.pool_ids):
            raw[f"{pool.pk} access"], raw[f"{pool.pk} refresh"] = pool.access_token_enc, pool.refresh_token_enc
        raw["provider"] = ManagedProvider.objects.get(pk=self.provider_id).secret_enc
        endpoint = WebhookEndpoint.objects.get(pk=self.endpoint_id)
        raw["endpoint"], raw["endpoint previous"] = endpoint.secret_enc, endpoint.previous_secret_enc
        row = IdempotencyKey.objects.get(key=IDEMPOTENCY_KEY)
        raw["idempotency"] = row.response_body["secret"]
        for authenticator in Authenticator.objects.filter(user_id=self.staff_id):
            raw[f"mfa {authenticator.type}"] = json.dumps(authenticator.data, sort_keys=True)
        return {k: v for k, v in raw.items() if v}


def build(tenant, *, tag: str) -> World:
    accounts = [
        connected_account(tenant, "tiktok", f"{tag}.tt")["id"],
        connected_account(tenant, "instagram", f"{tag}.ig")["id"],
    ]
    out = io.StringIO()
    call_command(
        "add_pool_accounts",
        "--count=2",
        "--vertical=fitness",
        "--language=en-US",
        "--geo=US",
        "--price-cents=4900",
        "--json",
        stdout=out,
    )
    pool_ids = json.loads(out.getvalue())["ids"]
    provider = ManagedProvider.objects.create(
        project=tenant.project,
        name="Distributor",
        endpoint_url="https://93.184.216.34/dispatch",
        secret_enc=crypto.encrypt(f"provider-secret-{tag}-0123456789abcdef"),
    )
    body = {"url": HOOK_URL, "events": ["scheduled_post.published"]}
    created = tenant.client.post(
        "/v1/webhook-endpoints", body, format="json", HTTP_IDEMPOTENCY_KEY=IDEMPOTENCY_KEY
    ).json()
    rotated = tenant.client.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret", {}, format="json")
    assert rotated.status_code == 200, rotated.content
    staff = get_user_model().objects.create_user(username=f"{tag}-staff", password="x" * 20, is_staff=True)
    TOTP.activate(staff, generate_totp_secret())
    RecoveryCodes.activate(staff)
    return World(
        tenant=tenant,
        account_ids=accounts,
        pool_ids=pool_ids,
        provider_id=provider.pk,
        endpoint_id=created["id"],
        staff_id=staff.pk,
        raw_api_key=tenant.raw_key,
        endpoint_body=body,
    )
