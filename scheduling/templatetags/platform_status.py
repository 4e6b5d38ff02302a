from django import template
from django.contrib import admin

from scheduling import platform_status
from scheduling.models import ScheduledPost

register = template.Library()


@register.inclusion_tag("admin/scheduling/platforms_now.html", takes_context=True)
def platforms_now(context):
    """The "Platforms now" panel, for staff who may see the scheduled posts (the refusals' words are the posts'
    own, shown on their pages); nothing for anyone else."""
    request = context["request"]
    if not admin.site.get_model_admin(ScheduledPost).has_view_or_change_permission(request):
        return {"platforms": None}
    return {
        "platforms": platform_status.platforms_now(),
        "window_minutes": int(platform_status.WINDOW.total_seconds() // 60),
        "none_since": f"none in {platform_status.lookback_text()}",
    }
