"""Authorization codes and tokens of the sandbox platforms: issue, look up, redeem, rotate, revoke.
Conditional updates make every one-shot transition (a code's use, a refresh token's rotation) safe when
several processes race on it."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .identities import new_instagram_code, new_tiktok_code, new_token, token_digest
from .models import AuthCode, Platform, Token

CODE_TTL = {Platform.TIKTOK: timedelta(minutes=10), Platform.INSTAGRAM: timedelta(hours=1)}
INSTAGRAM_SHORT_TTL = timedelta(hours=1)
# 5183944 s, the figure Instagram answers (a little under 60 days).
INSTAGRAM_LONG_TTL = timedelta(seconds=5183944)
INSTAGRAM_REFRESH_MIN_AGE = timedelta(hours=24)

_PREFIX = {
    Token.Kind.ACCESS: "act.",
    Token.Kind.REFRESH: "rft.",
    Token.Kind.SHORT_LIVED: "IGQWR",
    Token.Kind.LONG_LIVED: "IGAA",
}


@dataclass(frozen=True)
class Issued:
    raw: str
    token: Token


def issue_code(*, platform: str, username: str, client_id: str, redirect_uri: str, scopes: str) -> str:
    now = timezone.now()
    code = new_tiktok_code() if platform == Platform.TIKTOK else new_instagram_code()
    AuthCode.objects.create(
        platform=platform,
        code=code,
        username=username,
        client_id=client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        created_at=now,
        expires_at=now + CODE_TTL[platform],
    )
    return code


def find_code(*, platform: str, code: str) -> AuthCode | None:
    return AuthCode.objects.filter(platform=platform, code=code).first() if code else None


def redeem_code(auth_code: AuthCode, *, client_id: str, redirect_uri: str) -> str | None:
    """Use the code up. Returns why it cannot be used ("used", "expired", "client", "redirect_uri"), or None."""
    now = timezone.now()
    if auth_code.client_id != client_id:
        return "client"
    if auth_code.redirect_uri != redirect_uri:
        return "redirect_uri"
    if auth_code.expires_at <= now:
        return "expired"
    used = AuthCode.objects.filter(pk=auth_code.pk, used_at__isnull=True).update(used_at=now)
    return None if used else "used"


def issue_token(*, platform: str, kind: str, username: str, scopes: str, ttl: timedelta) -> Issued:
    now = timezone.now()
    raw = new_token(_PREFIX[kind])
    token = Token.objects.create(
        platform=platform,
        kind=kind,
        digest=token_digest(raw),
        username=username,
        scopes=scopes,
        issued_at=now,
        expires_at=now + ttl,
    )
    return Issued(raw=raw, token=token)


def tiktok_access_ttl() -> timedelta:
    """How long the sandbox's TikTok access tokens live: settings, as TikTok's documented lifetimes differ
    (24 h / 365 d, or 2 h / 180 d); the answer's expires_in says which one was issued."""
    return settings.LAYERS_SANDBOX_TIKTOK_ACCESS_TTL


def tiktok_refresh_ttl() -> timedelta:
    return settings.LAYERS_SANDBOX_TIKTOK_REFRESH_TTL


def issue_tiktok_pair(*, username: str, scopes: str) -> tuple[Issued, Issued]:
    access = issue_token(
        platform=Platform.TIKTOK, kind=Token.Kind.ACCESS, username=username, scopes=scopes, ttl=tiktok_access_ttl()
    )
    refresh = issue_token(
        platform=Platform.TIKTOK, kind=Token.Kind.REFRESH, username=username, scopes=scopes, ttl=tiktok_refresh_ttl()
    )
    return access, refresh


def find_token(*, platform: str, raw: str | None, kinds: tuple[str, ...]) -> Token | None:
    if not raw:
        return None
    return Token.objects.filter(platform=platform, digest=token_digest(raw), kind__in=kinds).first()


def token_problem(token: Token) -> str | None:
    """Why this token cannot be used: its revoked_reason, "expired", or None when it is good."""
    if token.revoked_at is not None:
        return token.revoked_reason or "revoked"
    if token.expires_at <= timezone.now():
        return "expired"
    return None


def rotate_refresh_token(token: Token) -> tuple[Issued, Issued] | None:
    """TikTok refresh: the old refresh token stops working, a new access + refresh pair is issued.
    None when another request rotated it first (one refresh token, one successor)."""
    with transaction.atomic():
        rotated = Token.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason="rotated"
        )
        if not rotated:
            return None
        return issue_tiktok_pair(username=token.username, scopes=token.scopes)


def revoke_user_tokens(*, platform: str, username: str, reason: str) -> int:
    """Every live token of that user stops working (reason "revoked" or "invalidated")."""
    return Token.objects.filter(platform=platform, username=username, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_reason=reason
    )
