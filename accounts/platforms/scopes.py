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
