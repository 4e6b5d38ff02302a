"""Plain rows for tests where no platform is involved (validation, listing, tenancy). Flows that depend on
real tokens go through the OAuth helpers and the sandbox instead."""

import itertools

from accounts import crypto
from accounts.models import PlatformIdentity, SocialAccount

_seq = itertools.count(1)


def make_account(
    tenant,
    *,
    platform: str = "tiktok",
    handle: str | None = None,
    status: str = "connected",
    kind: str = "connected",
    project=None,
) -> SocialAccount:
    n = next(_seq)
    handle = handle or f"handle{n}"
    identity, _ = PlatformIdentity.objects.get_or_create(
        organization=tenant.org, platform=platform, platform_user_id=f"uid-{handle}", defaults={"handle": handle}
    )
    from django.utils import timezone

    return SocialAccount.objects.create(
        organization=tenant.org,
        project=project or tenant.project,
        identity=identity,
        platform=platform,
        kind=kind,
        status=status,
        access_token_enc=crypto.encrypt(f"fake-token-{n}"),
        disconnected_at=timezone.now() if status == "disconnected" else None,
    )
