import secrets

from django.conf import settings
from django.core.management.base import CommandError

from config.commands import JsonCommand
from leasing import services
from leasing.geo import ISO_3166_ALPHA2, is_bcp47
from leasing.models import MAX_MONTHLY_PRICE_CENTS


class Command(JsonCommand):
    help = (
        "Add warmed TikTok accounts to the pool with sandbox handles (sandbox mode only: the sandbox issues "
        "their tokens, as TikTok would after the account's owner consented)."
    )

    def add_command_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--vertical", required=True)
        parser.add_argument("--language", required=True, help="BCP 47, e.g. en-US")
        parser.add_argument("--geo", action="append", required=True, help="ISO 3166-1 alpha-2 (repeatable)")
        parser.add_argument("--price-cents", type=int, required=True, dest="price_cents")

    def run(self, *, count, vertical, language, geo, price_cents, **options):
        if settings.LAYERS_PLATFORMS != "sandbox":
            raise CommandError("add_pool_accounts mints sandbox accounts; in live mode connect real accounts.")
        if not 1 <= count <= 1000:
            raise CommandError("--count must be from 1 to 1000.")
        if not is_bcp47(language):
            raise CommandError("--language must be a BCP 47 tag such as en-US.")
        geos = [g.upper() for g in geo]
        if any(g not in ISO_3166_ALPHA2 for g in geos):
            raise CommandError("--geo takes ISO 3166-1 alpha-2 codes such as US.")
        if not 0 <= price_cents <= MAX_MONTHLY_PRICE_CENTS:
            raise CommandError(f"--price-cents must be from 0 to {MAX_MONTHLY_PRICE_CENTS}.")
        vertical = vertical.strip()
        if not vertical:
            raise CommandError("--vertical must not be blank.")
        from accounts.platforms.sandbox import identities

        # Sandbox handles are [a-z0-9._]{2,30}: the vertical's ASCII letters and digits, then a random suffix.
        stem = "".join(c for c in vertical.lower() if c in "abcdefghijklmnopqrstuvwxyz0123456789")[:12] or "pool"
        ids = []
        for _ in range(count):
            handle = f"{stem}.{secrets.token_hex(3)}"
            tokens = services.sandbox_tokens_for(handle)
            account = services.pool_account_add(
                handle=handle,
                tokens=tokens,
                vertical=vertical,
                languages=[language],
                geos=geos,
                monthly_price_cents=price_cents,
                display_name=identities.display_name(handle),
            )
            ids.append(account.id)
        return {"ids": ids}, "\n".join(ids)
