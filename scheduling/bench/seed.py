"""Bench data, inserted in bulk.

Accounts get real sandbox tokens, minted with the sandbox's own helpers (accounts/platforms/sandbox/oauth.py)
instead of running one OAuth consent per account: what the platform clients then send is exactly what a
connected account sends. The rows are what social_account_bind and the post-connect fan-out leave behind
(identity, encrypted token, the four onboarding layers); the avatar rehost and the connect events are left
out, as neither plays any part in publishing or listing."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from accounts import crypto
from accounts.models import Organization, PlatformIdentity, Project, SocialAccount
from accounts.platforms import instagram as instagram_client
from accounts.platforms import tiktok as tiktok_client
from accounts.platforms.sandbox import identities
from accounts.platforms.sandbox import oauth as sandbox_oauth
from accounts.platforms.sandbox.models import Token
from scheduling.models import ONBOARDING_TEMPLATE, ContentContainer, Layer, LayerTemplate, ScheduledPost
from scheduling.services import placement_for

MEDIA_URL = "https://cdn.bench.test/clips/{label}-{n}.mp4"


def token_ttl(platform: str):
    return sandbox_oauth.tiktok_access_ttl() if platform == "tiktok" else sandbox_oauth.INSTAGRAM_LONG_TTL


def caption_of(label: str, n: int) -> str:
    """Unique per scheduled post: the sandbox's posts are matched back to scheduled posts by caption."""
    return f"bench {label} #{n}"


def _mint(platform: str, username: str) -> tuple[str, str | None, str]:
    """(access token, refresh token, scopes) issued by the sandbox for `username`."""
    if platform == "tiktok":
        scopes = ",".join(tiktok_client.DEFAULT_SCOPES)
        access, refresh = sandbox_oauth.issue_tiktok_pair(username=username, scopes=scopes)
        return access.raw, refresh.raw, scopes
    scopes = ",".join(instagram_client.DEFAULT_SCOPES)
    token = sandbox_oauth.issue_token(
        platform="instagram",
        kind=Token.Kind.LONG_LIVED,
        username=username,
        scopes=scopes,
        ttl=sandbox_oauth.INSTAGRAM_LONG_TTL,
    )
    return token.raw, None, scopes


def _platform_user_id(platform: str, username: str) -> str:
    if platform == "tiktok":
        return identities.tiktok_open_id(username)
    return identities.instagram_user_id(username)


def seed_tenant(name: str) -> tuple[Organization, Project]:
    from accounts import services as account_services

    organization = account_services.organization_create(name=name)
    return organization, account_services.project_create(organization=organization, name=f"{name} project")


@transaction.atomic
def seed_accounts(
    *, organization: Organization, project: Project, count: int, platforms: list[str], prefix: str
) -> list[SocialAccount]:
    """`count` connected accounts in `project`, platforms taken in turn, each with a live sandbox token
    and its four onboarding layers."""
    now = timezone.now()
    plan = [(platforms[n % len(platforms)], f"{prefix}{n:05d}") for n in range(count)]
    identity_rows = PlatformIdentity.objects.bulk_create(
        [
            PlatformIdentity(
                organization=organization,
                platform=platform,
                platform_user_id=_platform_user_id(platform, username),
                handle=username,
                display_name=identities.display_name(username),
            )
            for platform, username in plan
        ]
    )
    accounts = []
    for (platform, username), identity in zip(plan, identity_rows, strict=True):
        access, refresh, scopes = _mint(platform, username)
        accounts.append(
            SocialAccount(
                organization=organization,
                project=project,
                identity=identity,
                platform=platform,
                access_token_enc=crypto.encrypt(access),
                refresh_token_enc=crypto.encrypt(refresh) if refresh else "",
                # As issued: far enough from expiry that the health tick leaves them alone during a run.
                token_expires_at=now + token_ttl(platform),
                token_lifetime=token_ttl(platform),
                scopes=scopes,
                token_version=1,
                token_refreshed_at=now,
                health_checked_at=now,
                return_url="https://app.bench.test/connected",
            )
        )
    SocialAccount.objects.bulk_create(accounts)
    template = LayerTemplate.objects.get(name=ONBOARDING_TEMPLATE)
    Layer.objects.bulk_create(
        [
            Layer(
                organization=organization,
                project=project,
                social_account=account,
                template=template,
                kind=spec["kind"],
                name=spec["name"],
            )
            for account in accounts
            for spec in template.layers
        ]
    )
    return accounts


@transaction.atomic
def seed_posts(
    *, accounts: list[SocialAccount], count: int, scheduled_for: datetime, label: str, mode: str = "publish"
) -> list[str]:
    """`count` queued posts due at `scheduled_for`, spread over `accounts` in turn, one container each
    (unique caption). The rows are the ones posts_schedule writes."""
    containers = ContentContainer.objects.bulk_create(
        [
            ContentContainer(
                organization_id=accounts[n % len(accounts)].organization_id,
                project_id=accounts[n % len(accounts)].project_id,
                media_type="video",
                media_urls=[MEDIA_URL.format(label=label, n=n)],
                caption=caption_of(label, n),
            )
            for n in range(count)
        ],
        batch_size=1000,
    )
    posts = ScheduledPost.objects.bulk_create(
        [
            ScheduledPost(
                organization_id=container.organization_id,
                project_id=container.project_id,
                container=container,
                social_account=accounts[n % len(accounts)],
                mode=mode,
                scheduled_for=scheduled_for,
                due_at=scheduled_for,
                placement=placement_for(platform=accounts[n % len(accounts)].platform, media_type="video"),
            )
            for n, container in enumerate(containers)
        ],
        batch_size=1000,
    )
    return [post.pk for post in posts]
