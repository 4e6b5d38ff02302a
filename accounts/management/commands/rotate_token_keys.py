from django.core.management.base import CommandError

from accounts.key_rotation import rotate_all
from config.commands import JsonCommand


class Command(JsonCommand):
    help = (
        "Re-encrypt every stored secret (platform tokens, webhook and managed-provider secrets, staff MFA "
        "secrets) under the first key of LAYERS_TOKEN_KEYS, so that the other keys can be removed. Safe to run "
        "again; --dry-run only counts."
    )

    def add_command_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=500, help="rows read per query")
        parser.add_argument("--dry-run", action="store_true", help="count what would be rotated, change nothing")

    def run(self, *, batch, dry_run, **options):
        if batch < 1:  # a batch of 0 read no rows, rotated nothing, and reported that the old key could go
            raise CommandError("--batch must be at least 1.")
        report = rotate_all(batch=batch, dry_run=dry_run)
        lines = [
            f"{name}: {c['rotated']} rotated, {c['current']} already current"
            + (f", {c['undecryptable']} UNDECRYPTABLE" if c["undecryptable"] else "")
            + (f", {c['changedMeanwhile']} rewritten meanwhile" if c["changedMeanwhile"] else "")
            for name, c in report["columns"].items()
        ]
        verb = "would be rotated" if dry_run else "rotated"
        lines.append(
            f"{report['rotated']} value(s) {verb}, {report['current']} already under the first key, "
            f"{report['undecryptable']} undecryptable."
        )
        if report["undecryptable"]:
            lines.append("Undecryptable values were encrypted with a key no longer listed: they are lost.")
        elif not dry_run:
            lines.append("Every stored secret is now under the first key: the other keys can be removed.")
        return report, "\n".join(lines)
