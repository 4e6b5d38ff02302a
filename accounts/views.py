"""Unauthenticated endpoints: operations (health), and what the platforms call (OAuth callback, webhooks)."""

import logging

from django.contrib import messages
from django.db import connection
from django.http import HttpResponseRedirect, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.api.errors import envelope

log = logging.getLogger(__name__)


def healthz(request):
    """The process is up and serving."""
    return JsonResponse({"status": "ok"})


# Set once every migration of this release is found applied: migrations are not un-applied under a running
# process, so from then on a probe costs a SELECT 1 only, instead of reading every migration file and the
# django_migrations table (the loader) on each probe.
_migrations_applied = False


def _unapplied_migrations() -> int:
    global _migrations_applied
    if _migrations_applied:
        return 0
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    unapplied = len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
    _migrations_applied = unapplied == 0
    return unapplied


def readyz(request):
    """The database is reachable and migrated to this release, and the task broker is reachable; 503 naming
    what is not. Before `migrate` has run (a new database, a release with new migrations), every API call would
    fail on the missing schema: the load balancer must not send this process traffic yet. /healthz reads
    nothing: it is the hot path.

    Not the clock (config/clock.py): a web process judges times to minutes (a scheduledFor 5 minutes in the
    past, an OAuth state's 30 minutes), and the Idempotency-Key's age is the database's. Review showed the
    cost of asking: the database server's own clock drifting past LAYERS_MAX_CLOCK_SKEW_SECONDS made every web
    process unready at once, the whole API out of the load balancer."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        unapplied = _unapplied_migrations()
        checks["database"] = f"error: {unapplied} unapplied migration(s)" if unapplied else "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        from config.celery import app

        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    response = JsonResponse(body, status=200 if ready else 503)
    if not ready:
        # Not ready is what every deploy looks like until `migrate` has run, and what a broker restart looks
        # like: a warning saying which check failed. Django's own line for a 503 is an ERROR that says
        # neither ("Service Unavailable: /readyz"); a response marked so is not logged again by Django.
        log.warning("not ready (503 from /readyz): %s", ", ".join(f"{k} {v}" for k, v in checks.items()))
        response._has_been_logged = True
    return response


def oauth_callback(request, platform: str):
    """Where TikTok / Instagram send the end-customer back after consent. Redirects to the partner's
    returnUrl (success: exactly it; failure: with layers_oauth_error), or shows an error page — with no
    redirect anywhere — when the state is unknown, since we then do not know whose URL is safe.

    Instagram sends the browser here with `#_`, and a browser carries the fragment of the URL it was sent
    to over a redirect whose Location has none (RFC 9110 10.2.2): the customer would land on `returnUrl#_`.
    After Instagram the Location therefore ends with an empty fragment (`returnUrl#`, never inherited); a
    returnUrl never has a fragment of its own (check_return_url refuses one).

    A staff connect of a pool account (purpose `pool`) comes back here too, and goes to the pool account's
    admin page with a message instead; only in the browser of the staff member who started it, signed in
    (the admin's session cookie, SameSite=Lax, comes along on TikTok's top-level redirect): any other gets a
    403 page and the connect is left as it was."""
    from django.shortcuts import render

    from accounts import services

    if platform not in ("tiktok", "instagram"):
        return render(request, "oauth/error.html", {"reason": "Unknown platform."}, status=404)
    outcome = services.oauth_callback(
        platform=platform,
        state=request.GET.get("state"),
        code=request.GET.get("code"),
        error=request.GET.get("error"),
        error_reason=request.GET.get("error_reason"),
        error_description=request.GET.get("error_description"),
        user=request.user,
    )
    if outcome.refused:
        # A staff pool connect completed in another browser than its staff member's (services.oauth_callback).
        return render(request, "oauth/error.html", {"reason": outcome.message}, status=403)
    denied = platform == "instagram" and request.GET.get("error") == "access_denied"
    if outcome.redirect_url is None and denied and not request.GET.get("state"):
        # Instagram sends a declined consent back without the state (PLATFORMS.md: `?error=access_denied&
        # error_reason=user_denied&…`; the sandbox keeps it, as API.md says): whose connect it was, and so whose
        # returnUrl is safe, cannot be known. The customer is told what happened, not that the link is broken;
        # the partner's oauth-status reads `expired` once the state's 30 minutes are over.
        reason = (
            "You declined to connect your Instagram account, so nothing was connected. "
            "Close this window and go back to the app you came from if you want to try again."
        )
        return render(request, "oauth/error.html", {"reason": reason, "declined": True})
    if outcome.redirect_url is None:
        return render(
            request,
            "oauth/error.html",
            {"reason": "This sign-in link is unknown or invalid. Go back to the app you came from and start again."},
            status=400,
        )
    if outcome.pool_account_id:
        # A staff connect of a pool account (leasing admin): back to that account's admin page, never a
        # partner's URL, with what happened for staff to read there.
        level = messages.ERROR if outcome.error_code else messages.SUCCESS
        messages.add_message(request, level, outcome.message)
        return HttpResponseRedirect(outcome.redirect_url)
    return HttpResponseRedirect(f"{outcome.redirect_url}#" if platform == "instagram" else outcome.redirect_url)


@csrf_exempt  # TikTok's servers post here; the signature is the authentication
def tiktok_webhook(request):
    """TikTok's webhook callback (register `{LAYERS_PUBLIC_URL}/platform-webhooks/tiktok` in TikTok's developer
    portal). `authorization.removed` flips the user's bindings to reauth_required; other events are
    acknowledged and ignored. Any answer but a 200 makes TikTok retry, so a valid event is answered 200
    even when it changed nothing (a repeat, an unknown user)."""
    from accounts import services
    from accounts.models import Platform
    from accounts.platforms import tiktok_webhooks

    if request.method != "POST":
        return JsonResponse(envelope(405, "METHOD_NOT_ALLOWED", "Use POST."), status=405, headers={"Allow": "POST"})
    try:
        event = tiktok_webhooks.parse(body=request.body, header=request.headers.get(tiktok_webhooks.SIGNATURE_HEADER))
    except tiktok_webhooks.WebhookRejected as exc:
        log.warning("tiktok webhook refused: %s", exc.code)
        return _rejected(exc)
    if event.event != "authorization.removed":
        return JsonResponse({"received": True, "event": event.event, "applied": False})
    flipped = services.platform_authorization_removed(
        platform=Platform.TIKTOK, platform_user_id=event.user_openid, removed_at=event.created_at
    )
    reason = event.content.get("reason")
    log.info("tiktok authorization.removed (reason %r): %d binding(s) now need a reauth", reason, len(flipped))
    return JsonResponse({"received": True, "event": event.event, "applied": bool(flipped)})


def _rejected(exc) -> JsonResponse:
    """The answer to a platform's notice that is not a valid one (base.NoticeRejected), in the envelope."""
    return JsonResponse(envelope(exc.status, exc.code, exc.message), status=exc.status)


def _instagram_signed_request(request):
    """(the verified signed request, None), or (None, the error response) for one of Meta's callbacks: a POSTed
    form whose one field is `signed_request`, signed with the Instagram app secret."""
    from django.conf import settings

    from accounts.platforms import meta_signed_request as signed

    if request.method != "POST":
        response = JsonResponse(envelope(405, "METHOD_NOT_ALLOWED", "Use POST."), status=405, headers={"Allow": "POST"})
        return None, response
    values = request.POST.getlist(signed.FIELD)
    try:
        if len(values) > 1:
            raise signed.SignedRequestRejected("MALFORMED_REQUEST", f"`{signed.FIELD}` is given more than once.")
        return signed.parse(values[0] if values else None, secret=settings.LAYERS_INSTAGRAM_CLIENT_SECRET), None
    except signed.SignedRequestRejected as exc:
        # The code only: the request itself is a credential of sorts (it names a user, signed).
        log.warning("instagram %s refused: %s", request.path, exc.code)
        return None, _rejected(exc)


@csrf_exempt  # Meta's servers post here; the signature is the authentication
def instagram_deauthorize(request):
    """Instagram's Deauthorize callback (register `{LAYERS_PUBLIC_URL}/platform-webhooks/instagram/deauthorize`
    in Meta's App Dashboard): the person removed the app, so their live bindings go to reauth_required. A valid
    request is answered 200 even when it changed nothing (a repeat, a user Layers does not know)."""
    from accounts import services
    from accounts.models import Platform

    signed, refused = _instagram_signed_request(request)
    if refused is not None:
        return refused
    flipped = services.platform_authorization_removed(
        platform=Platform.INSTAGRAM, platform_user_id=signed.user_id, removed_at=signed.issued_at
    )
    # Which of the person's ids Meta sent (its docs do not say), not the id: it names a person, and a log line
    # would keep it past their data deletion. "no identity" on every request means Meta sends an id Layers
    # does not record (README).
    matched = services.platform_user_id_kinds(platform=Platform.INSTAGRAM, platform_user_id=signed.user_id)
    log.info(
        "instagram deauthorize: %d binding(s) now need a reauth (matched %s)",
        len(flipped),
        "+".join(matched) or "no identity",
    )
    return JsonResponse({"received": True, "applied": bool(flipped)})


@csrf_exempt  # Meta's servers post here; the signature is the authentication
def instagram_data_deletion(request):
    """Instagram's Data deletion request callback (register
    `{LAYERS_PUBLIC_URL}/platform-webhooks/instagram/data-deletion` in Meta's App Dashboard): erase what Layers
    keeps about the person (services.platform_user_data_delete) and answer what Meta requires, the URL of a
    page where the person checks the request and its confirmation code. A user Layers does not know still
    gets a code: there was nothing to delete, and that is completed too."""
    from django.conf import settings

    from accounts import services
    from accounts.models import Platform

    signed, refused = _instagram_signed_request(request)
    if refused is not None:
        return refused
    deletion = services.platform_user_data_delete(
        platform=Platform.INSTAGRAM,
        platform_user_id=signed.user_id,
        requested_at=signed.issued_at,
        request_key=signed.key,
    )
    code = deletion.confirmation_code
    return JsonResponse({"url": f"{settings.LAYERS_PUBLIC_URL}/data-deletion/{code}", "confirmation_code": code})


def data_deletion_status(request, code: str):
    """The page Meta links the person to with their confirmation code: the code, the date, "completed". Nothing
    about the person: anyone holding the link can read it."""
    from django.shortcuts import render

    from accounts.models import DataDeletionRequest
    from accounts.services import confirmation_code_typed

    # A person reads it, and may mistype the code: an HTML page either way, not the API's JSON 404. A code of
    # another shape is not looked up at all.
    code = confirmation_code_typed(code)
    deletion = DataDeletionRequest.objects.filter(confirmation_code=code).first() if code else None
    return render(request, "data_deletion/status.html", {"deletion": deletion}, status=200 if deletion else 404)
