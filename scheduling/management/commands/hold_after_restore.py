from datetime import timedelta

from django.core.management.base import CommandError
from django.db.models import Q
from django.utils import timezone

from accounts.models import Organization
from accounts.services import social_accounts_refresh_due
from config.api.fields import datetime_output, parse_rfc3339
from config.commands import JsonCommand
from leasing.services import pool_accounts_refresh_due
from scheduling import services

# A backup older than this is more likely a typo (a wrong month or year) than the one restored: refused
# unless --force. The posts held do not depend on it; their message, and the partners told, do.
RESTORED_TO_MAX_AGE = timedelta(days=30)


class Command(JsonCommand):
    help = (
        "Run after restoring the database from a backup and BEFORE starting workers and beat: fails "
        "(PLATFORM_UNAVAILABLE, with a message naming the backup's time) every due queued or publishing post "
        "without a publish id that is not managed — it may have been published after the backup, and the "
        "dispatcher would publish it again — and lists them by organization, with the TikTok accounts whose "
        "refresh token may have been rotated after the backup. Safe to run again; --dry-run changes nothing."
    )

    def add_command_arguments(self, parser):
        parser.add_argument(
            "--restored-to",
            required=True,
            help="when the backup restored was taken, RFC 3339 with its timezone (2026-11-29T03:00:00Z)",
        )
        parser.add_argument("--dry-run", action="store_true", help="list what would be held, change nothing")
        parser.add_argument(
            "--force",
            action="store_true",
            help="hold even if the time is more than 30 days back, or workers or beat ran on the restored database",
        )

    def run(self, *, restored_to, dry_run, force, **options):
        now = timezone.now()
        moment = _restored_to(restored_to, now=now, force=force)
        if not force:
            _refuse_if_workers_ran(moment)
        held = services.posts_hold_after_restore(restored_to=moment, now=now, dry_run=dry_run)
        this_run = set(held)
        earlier = [row for row in services.posts_held_after_restore(restored_to=moment) if row not in this_run]
        accounts = list(
            social_accounts_refresh_due(platform="tiktok", now=now)
            .order_by("organization_id", "pk")
            .values_list("organization_id", "pk", "identity__handle")
        )
        pool = list(pool_accounts_refresh_due(now=now).order_by("pk").values_list("pk", "handle"))
        result = {
            "restoredTo": datetime_output(moment),
            "dryRun": dry_run,
            "heldCount": len(held),
            "heldPosts": _by_organization(held),
            "alreadyHeldPosts": _by_organization(earlier),
            "refreshTokenMayBeDead": {
                "socialAccounts": _by_organization([(org, pk) for org, pk, _ in accounts]),
                "poolAccounts": [pk for pk, _ in pool],
            },
        }
        return result, _human(result, held=held, earlier=earlier, accounts=accounts, pool=pool)


def _restored_to(text: str, *, now, force: bool):
    moment = parse_rfc3339(text)
    if moment is None:
        raise CommandError(
            f"--restored-to must be an RFC 3339 time with its timezone, e.g. 2026-11-29T03:00:00Z (got {text!r})."
        )
    if moment > now:
        raise CommandError(
            f"--restored-to {datetime_output(moment)} is in the future (now {datetime_output(now)}): give the time "
            "the backup was taken."
        )
    if now - moment > RESTORED_TO_MAX_AGE and not force:
        raise CommandError(
            f"--restored-to {datetime_output(moment)} is {(now - moment).days} days back, more than "
            f"{RESTORED_TO_MAX_AGE.days}: check the date of the backup (--force if it is right)."
        )
    return moment


def _refuse_if_workers_ran(moment) -> None:
    """Refused when the database shows what only workers and beat write, written after the backup's time: they
    ran on the restored database (and may have published posts again already, while this holds the others), or
    the backup is later than --restored-to."""
    from django_celery_beat.models import PeriodicTask

    found = services.posts_activity_after(moment=moment)
    cut = moment + services.RESTORE_ACTIVITY_SLACK
    # Beat writes its periodic tasks as it starts (date_changed) and their last runs as it goes.
    if PeriodicTask.objects.filter(Q(date_changed__gt=cut) | Q(last_run_at__gt=cut)).exists():
        found["beat"] = 1
    if not found:
        return
    words = {
        "postsClaimed": "{n} post(s) claimed by a dispatcher",
        "postsPublished": "{n} post(s) published",
        "platformAnswers": "{n} platform answer(s) recorded",
        "beat": "beat started or ran",
    }
    seen = "; ".join(words[what].format(n=n) for what, n in found.items())
    raise CommandError(
        f"The database shows activity after {datetime_output(moment)}: {seen}. Workers or beat are running on "
        "the restored database (stop them first: they may already have published posts a second time), or the "
        "backup was taken later than --restored-to (give its time). --force holds anyway."
    )


def _by_organization(rows) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for organization_id, pk in rows:
        grouped.setdefault(organization_id, []).append(pk)
    return grouped


def _human(result: dict, *, held, earlier, accounts, pool) -> str:
    names = dict(
        Organization.objects.filter(
            pk__in={org for org, _ in held + earlier} | {org for org, *_ in accounts}
        ).values_list("pk", "name")
    )

    def org(pk: str) -> str:
        return f"{names.get(pk, '?')} ({pk})"

    verb = "Would hold" if result["dryRun"] else "Held"
    lines = [
        f"Database restored to {result['restoredTo']}.",
        f"{verb} {len(held)} post(s) that may have been published since (failed PLATFORM_UNAVAILABLE). Check each "
        "on the platform, then retry it in the admin (Retry … anyway — I checked they are NOT on the platform) "
        "or let the partner schedule it again.",
    ]
    lines += [f"  {org(o)}: {', '.join(ids)}" for o, ids in result["heldPosts"].items()]
    if earlier:
        lines.append(f"Held by an earlier run for this restore (retried since or not): {len(earlier)} post(s).")
        lines += [f"  {org(o)}: {', '.join(ids)}" for o, ids in result["alreadyHeldPosts"].items()]
    lines.append(
        f"TikTok accounts whose refresh token may be dead ({len(accounts)}): their refresh came due since the "
        "backup, and TikTok rotated it if Layers refreshed it before the outage. They go reauth_required at "
        "their next refresh (social_account.needs_reauth): tell the partners."
    )
    by_org: dict[str, list[str]] = {}
    for organization_id, pk, handle in accounts:
        by_org.setdefault(organization_id, []).append(f"{pk} (@{handle})")
    lines += [f"  {org(o)}: {', '.join(items)}" for o, items in by_org.items()]
    if pool:
        lines.append(
            f"Pool accounts likewise ({len(pool)}): retired at their next refresh; connect them again in the admin."
        )
        lines.append("  " + ", ".join(f"{pk} (@{handle})" for pk, handle in pool))
    return "\n".join(lines)
