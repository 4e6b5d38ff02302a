"""The OAuth scopes each platform knows, with what its consent page says each grants.

One list for both sides of the authorize URL: reauth-url refuses a scope not listed here for the account's
platform (a 422 the partner sees at once; the platform would show the customer an error page of its own,
"The requested scope is not valid", and never send them back to the returnUrl), and the sandbox, playing the
platform, refuses the same scopes. Add a scope here once Layers' app on that platform may ask for it."""

TIKTOK = {
    "user.info.basic": "Read your profile info (avatar and display name)",
    "user.info.profile": "Read your username and profile details",
    "user.info.stats": "Read your follower, following and like counts",
    "video.publish": "Post content directly to your TikTok profile",
    "video.upload": "Upload content to your TikTok inbox as drafts",
    "video.list": "Read your public videos and their statistics",
}

INSTAGRAM = {
    "instagram_business_basic": "Access your profile and your media",
    "instagram_business_content_publish": "Publish content to your account",
    "instagram_business_manage_insights": "Read the insights of your posts",
    "instagram_business_manage_comments": "Read and manage the comments on your posts",
    "instagram_business_manage_messages": "Read and send direct messages",
}

SCOPES: dict[str, dict[str, str]] = {"tiktok": TIKTOK, "instagram": INSTAGRAM}

# The scopes that let Layers post for an account, any one of them enough. TikTok: video.publish for posts in
# `publish` mode (creator_info and the direct-post inits), video.upload for `draft` mode (the inbox uploads).
# Instagram: instagram_business_content_publish (containers and media_publish); Instagram has no draft API,
# so its drafts are a Layers delivery that no Instagram permission grants, and a grant without the publishing
# permission is one the customer gave for reading only.
PUBLISHING: dict[str, frozenset[str]] = {
    "tiktok": frozenset({"video.publish", "video.upload"}),
    "instagram": frozenset({"instagram_business_content_publish"}),
}


def stored_scopes(text: str) -> tuple[str, ...]:
    """The scopes of a grant as an account stores them (SocialAccount.scopes, comma-separated, what the
    platform said it granted at connect or reauth; empty: not known)."""
    return tuple(scope for scope in text.split(",") if scope)


def publishing_scopes_missing(platform: str, granted) -> list[str]:
    """The publishing scopes a grant whose scopes the platform reported lacks, sorted (none when the scopes are
    unknown: empty). A pool account needs them all: partners lease it to post in every mode."""
    granted = set(granted)
    return sorted(PUBLISHING[platform] - granted) if granted else []


def grant_lacks_publishing(platform: str, granted) -> bool:
    """Whether a grant whose scopes the platform reported (`granted`: TokenSet.scopes) lets Layers post in no
    mode at all: the customer unticked the publishing permission on the consent page. A grant whose scopes
    the platform did not report (empty) is not taken as lacking them: a platform that leaves the field out
    would otherwise have every connect refused; its posts say so if the scope is missing after all."""
    granted = set(granted)
    return bool(granted) and not granted & PUBLISHING[platform]


# The publishing scope a post in each mode needs where the platform asks for one per mode: TikTok's
# creator_info and direct-post inits (mode publish) need video.publish, its inbox uploads (mode draft)
# video.upload, and a grant may hold one without the other. Instagram has a single publishing permission,
# which every grant Layers binds holds (grant_lacks_publishing), and its drafts are a Layers delivery that
# no permission grants; managed posts go to the project's provider and use no token.
MODE_SCOPES: dict[str, dict[str, str]] = {"tiktok": {"publish": "video.publish", "draft": "video.upload"}}


def scope_for_mode(platform: str, mode: str) -> str | None:
    """The scope a post of `platform` in `mode` needs of its own, if any (MODE_SCOPES)."""
    return MODE_SCOPES.get(platform, {}).get(mode)


def grant_lacks_mode(platform: str, mode: str, granted) -> str | None:
    """The scope a grant whose scopes the platform reported (`granted`) lacks for posting in `mode`, or None.
    A grant whose scopes are not known (empty: an account connected before they were stored, or a platform
    that did not say) is not taken as lacking it, as in grant_lacks_publishing."""
    needed = scope_for_mode(platform, mode)
    granted = set(granted)
    return needed if needed and granted and needed not in granted else None
