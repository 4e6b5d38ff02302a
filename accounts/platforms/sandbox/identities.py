"""Who a sandbox user is: everything derives from the handle typed on the consent page, so the same handle
is always the same platform user (same TikTok open_id, same Instagram user id), across runs and processes.
Also the shapes of the secrets the sandbox mints, which mimic the real ones."""

import hashlib
import re
import secrets

USERNAME_RE = re.compile(r"^[a-z0-9._]{2,30}$")


def normalize_username(raw: str | None) -> str | None:
    """Handles are case-insensitive on both platforms; None when it is not a plausible handle."""
    username = (raw or "").strip().lstrip("@").lower()
    return username if USERNAME_RE.match(username) else None


def _digest_int(label: str, username: str) -> int:
    return int(hashlib.sha256(f"{label}:{username}".encode()).hexdigest(), 16)


def tiktok_open_id(username: str) -> str:
    return "tt_" + hashlib.sha256(f"tiktok-open-id:{username}".encode()).hexdigest()[:32]


def tiktok_union_id(username: str) -> str:
    return "tu_" + hashlib.sha256(f"tiktok-union-id:{username}".encode()).hexdigest()[:32]


def instagram_user_id(username: str) -> str:
    """The professional account id (`user_id` on /me, used in publishing paths): 17 digits, 17841…"""
    return f"17841{_digest_int('instagram-user-id', username) % 10**12:012d}"


def instagram_scoped_id(username: str) -> str:
    """The app-scoped id (`id` on /me) — a different number on purpose, as on Instagram, so a client that
    confuses the two fails here rather than in production."""
    return f"2{_digest_int('instagram-scoped-id', username) % 10**16:016d}"


def display_name(username: str) -> str:
    return " ".join(part.capitalize() for part in re.split(r"[._]+", username) if part) or username


def token_digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def new_tiktok_code() -> str:
    # Real codes contain '*' and '!': a client that does not URL-decode the callback breaks here too.
    return f"{secrets.token_urlsafe(48)}*0!{secrets.randbelow(9000) + 1000}.va"


def new_instagram_code() -> str:
    return "AQ" + secrets.token_urlsafe(64)


def new_token(prefix: str) -> str:
    suffix = "!6135.va" if prefix in ("act.", "rft.") else ""
    return f"{prefix}{secrets.token_urlsafe(48)}{suffix}"


def new_numeric_id(first_digit: int = 1) -> str:
    """An Instagram-looking id (17-18 digits)."""
    return f"{first_digit}{secrets.randbelow(10**17):017d}"


def new_tiktok_post_id() -> str:
    """An int64 post id as TikTok's (19 digits starting with 7)."""
    return f"7{secrets.randbelow(10**18):018d}"


def new_log_id() -> str:
    return secrets.token_hex(16).upper()
