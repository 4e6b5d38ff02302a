"""Mounted at /sandbox/ by config/urls.py only when LAYERS_PLATFORMS == "sandbox". Paths mirror the live
hosts: www.tiktok.com and open.tiktokapis.com under tiktok/, www.instagram.com under instagram/,
api.instagram.com under instagram/api/ and graph.instagram.com under instagram/graph/."""

from django.urls import path, re_path

from . import instagram_views, tiktok_views, views
from .faults import stalling

app_name = "sandbox"

PLATFORM = r"(?P<platform>tiktok|instagram)"

urlpatterns = [
    # Browser pages
    path("tiktok/v2/auth/authorize/", views.consent, {"platform": "tiktok"}, name="tiktok-authorize"),
    path("instagram/oauth/authorize", views.consent, {"platform": "instagram"}, name="instagram-authorize"),
    re_path(rf"^{PLATFORM}/avatar/(?P<username>[a-z0-9._]{{2,30}})\.png$", views.avatar, name="avatar"),
    # Control endpoints (tests, demos)
    re_path(rf"^{PLATFORM}/_control/invalidate-tokens$", views.control_invalidate_tokens, name="invalidate-tokens"),
    re_path(rf"^{PLATFORM}/_control/faults$", views.control_faults, name="faults"),
    re_path(rf"^{PLATFORM}/_control/deauthorize$", views.control_deauthorize, name="deauthorize"),
    re_path(rf"^{PLATFORM}/_control/posts$", views.control_posts, name="posts"),
    re_path(rf"^{PLATFORM}/_control/stall$", views.control_stall, name="stall"),
    # TikTok (open.tiktokapis.com)
    path("tiktok/v2/oauth/token/", stalling(tiktok_views.token)),
    path("tiktok/v2/oauth/revoke/", stalling(tiktok_views.revoke)),
    path("tiktok/v2/user/info/", stalling(tiktok_views.user_info)),
    path("tiktok/v2/post/publish/creator_info/query/", stalling(tiktok_views.creator_info)),
    path("tiktok/v2/post/publish/video/init/", stalling(tiktok_views.video_init)),
    path("tiktok/v2/post/publish/inbox/video/init/", stalling(tiktok_views.inbox_video_init)),
    path("tiktok/v2/post/publish/content/init/", stalling(tiktok_views.content_init)),
    path("tiktok/v2/post/publish/status/fetch/", stalling(tiktok_views.status_fetch)),
    path("tiktok/v2/video/query/", stalling(tiktok_views.video_query)),
    # Instagram (api.instagram.com, graph.instagram.com)
    path("instagram/api/oauth/access_token", stalling(instagram_views.oauth_token)),
    path("instagram/graph/access_token", stalling(instagram_views.exchange_token)),
    path("instagram/graph/refresh_access_token", stalling(instagram_views.refresh_token)),
    re_path(
        r"^instagram/graph/(?:(?P<version>v\d+\.\d+)/)?(?P<node>[A-Za-z0-9_]+)(?:/(?P<edge>[a-z_]+))?$",
        stalling(instagram_views.graph),
    ),
]
