import time

from django.core.management.base import BaseCommand

from scheduling import services


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
        while True:
            done = 0
            for post_id in services.posts_claim_due(limit=batch):
                self.stdout.write(f"{post_id} {services.post_publish(post_id=post_id)}")
                done += 1
            for post_id in services.posts_claim_for_resolution(limit=batch):
                self.stdout.write(f"{post_id} {services.post_resolve(post_id=post_id)}")
                done += 1
            if once:
                return
            if not done:
                time.sleep(interval)
