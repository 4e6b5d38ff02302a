from django import template
from django.contrib import admin

from accounts.models import Event
from accounts.webhooks.models import WebhookDelivery
from scheduling import pipeline_status
from scheduling.models import ScheduledPost

register = template.Library()


@register.inclusion_tag("admin/scheduling/layers_now.html", takes_context=True)
def layers_now(context):
    """The "Layers now" panel, for staff who may see the scheduled posts (as "Platforms now"); nothing for anyone
    else. A count links to the admin list of what it counts only for staff who may see that list."""
    request = context["request"]
    if not admin.site.get_model_admin(ScheduledPost).has_view_or_change_permission(request):
        return {"lines": None}
    lines = pipeline_status.layers_now()
    lists = {"late": ScheduledPost, "events": Event}
    for line in lines:
        for figure in line.counts:
            model = WebhookDelivery if line.key == "webhooks" and figure.kind == "late" else lists[figure.kind]
            if not admin.site.get_model_admin(model).has_view_or_change_permission(request):
                figure.url = None
    return {"lines": lines, "grace_seconds": int(pipeline_status.GRACE.total_seconds())}
