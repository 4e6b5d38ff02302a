import logging
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import InterfaceError, OperationalError, connection

from scheduling import services

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Claim due scheduled posts and publish them in this process (no broker): one tick with --once, or "
        "a loop. The same services the Celery tick uses; useful for ops, benchmarks and crash tests."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true")
        parser.add_argument("--batch", type=int, default=100)
        parser.add_argument("--interval", type=float, default=1.0)

    def handle(self, *args, once, batch, interval, **options):
        # Refused before any tick: a batch of 0 claims nothing forever without a word, a negative one is a
        # negative LIMIT (a DataError), and a negative interval fails sleep() at the first idle tick.
        if batch < 1:
            raise CommandError("--batch must be at least 1 (the posts claimed per tick).")
        if not interval >= 0:  # nan too
            raise CommandError("--interval must be 0 or more seconds (the wait after an idle tick).")
        while True:
            try:
                done = self.tick(batch)
            except (OperationalError, InterfaceError):
                # The database went away (restart, failover, a killed connection): a loop keeps going on a
                # fresh connection; whatever this tick had claimed is settled by a later tick's resolver.
                if once:
                    raise
                log.exception("dispatch tick failed on a database error; reconnecting")
                connection.close()
                done = 0
            if once:
                return
            if not done:
                time.sleep(interval)

    def tick(self, batch: int) -> int:
        done = 0
        ids = services.posts_claim_due(limit=batch)
        for post_id, outcome in (services.posts_publish(post_ids=ids) if ids else {}).items():
            self.stdout.write(f"{post_id} {outcome}")
            done += 1
        steps = [(services.posts_claim_for_resolution, services.post_resolve, "resolving")]
        if len(ids) < batch:  # workers keep up: prepare containers of posts due soon (after the due ones)
            steps.append((services.posts_claim_for_preparation, services.post_prepare, "preparing"))
        for claim, settle, doing in steps:
            for post_id in claim(limit=batch):
                try:
                    outcome = settle(post_id=post_id)
                except Exception:
                    log.exception("%s %s raised; a later tick settles it", doing, post_id)
                    services.drop_broken_connection()
                    outcome = "error"
                self.stdout.write(f"{post_id} {outcome}")
                done += 1
        return done
