"""Injected failures and per-minute limits.

A fault is attributed to a user: it is taken by the next API call made with one of their tokens (or with
an authorization code / refresh token of theirs). "reject" is a content refusal and "container_error" (on
Instagram only) a container accepted that then fails on Instagram's side, so only the call each is answered
on takes them: "reject" TikTok's init calls, Instagram's media_publish (Meta refuses a post it suspects as spam
there, code 4 / subcode 2207051) and draft delivery; "container_error" Instagram's container creation. The
other kinds are taken by any attributed call, oldest first.
"""

import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from .models import Fault, RateWindow, Stall

KINDS = tuple(Fault.Kind.values)
CONTENT_KINDS = (Fault.Kind.REJECT, Fault.Kind.CONTAINER_ERROR)
INSTAGRAM_ONLY_KINDS = (Fault.Kind.CONTAINER_ERROR,)


def add_fault(*, platform: str, username: str, kind: str, count: int) -> Fault:
    return Fault.objects.create(
        platform=platform, username=username, kind=kind, remaining=count, created_at=timezone.now()
    )


def take_fault(*, platform: str, username: str, content: bool | tuple[str, ...]) -> str | None:
    """Consume one unit of the oldest applicable fault; its kind, or None. `content`: the content kinds the call
    takes (True: all of them; False: none)."""
    taken = CONTENT_KINDS if content is True else content or ()
    for _ in range(5):  # a concurrent call may take the last unit between our read and our update
        pending = Fault.objects.filter(platform=platform, username=username, remaining__gt=0)
        if skipped := [kind for kind in CONTENT_KINDS if kind not in taken]:
            pending = pending.exclude(kind__in=skipped)
        fault = pending.order_by("created_at", "id").first()
        if fault is None:
            return None
        if Fault.objects.filter(pk=fault.pk, remaining__gt=0).update(remaining=F("remaining") - 1):
            return fault.kind
    return None


def simulate_timeout() -> None:
    """In-process (tests) raise the timeout the client would see; over real sockets, outlast its timeout."""
    if settings.LAYERS_PLATFORM_TRANSPORT == "wsgi":
        raise httpx.ReadTimeout("sandbox fault: timeout")
    time.sleep(settings.LAYERS_PLATFORM_TIMEOUT + 1)


def within_limit(*, platform: str, key: str, per_minute: int) -> bool:
    """Count one call against a fixed one-minute window; False (and not counted) past the limit."""
    now = timezone.now()
    window = now.replace(second=0, microsecond=0)
    row, created = RateWindow.objects.get_or_create(platform=platform, key=key, window_start=window)
    if created:
        RateWindow.objects.filter(window_start__lt=now - timedelta(hours=1)).delete()
    return bool(RateWindow.objects.filter(pk=row.pk, calls__lt=per_minute).update(calls=F("calls") + 1))


def add_stall(*, platform: str, path_contains: str, seconds: float, count: int) -> Stall:
    return Stall.objects.create(
        platform=platform, path_contains=path_contains, seconds=seconds, remaining=count, created_at=timezone.now()
    )


def take_stall(*, platform: str, path: str) -> float | None:
    """Consume one unit of the oldest stall matching `path`; its delay in seconds, or None."""
    for stall in Stall.objects.filter(platform=platform, remaining__gt=0).order_by("created_at", "id"):
        if stall.path_contains in path and Stall.objects.filter(pk=stall.pk, remaining__gt=0).update(
            remaining=F("remaining") - 1
        ):
            return stall.seconds
    return None


def stalling(view):
    """Wrap a platform API view: answer normally, but late when a stall matches the request. Every call
    also waits LAYERS_SANDBOX_LATENCY_MS first (0 by default), the network latency of a real platform
    that benchmarks simulate."""

    def wrapper(request, *args, **kwargs):
        if (latency := settings.LAYERS_SANDBOX_LATENCY_MS) > 0:
            time.sleep(latency / 1000)
        response = view(request, *args, **kwargs)
        platform = "tiktok" if "/sandbox/tiktok/" in request.path else "instagram"
        if (seconds := take_stall(platform=platform, path=request.path)) is not None:
            time.sleep(seconds)
        return response

    wrapper.__name__ = getattr(view, "__name__", "view")
    wrapper.__doc__ = view.__doc__
    if getattr(view, "csrf_exempt", False):
        wrapper.csrf_exempt = True
    return wrapper
