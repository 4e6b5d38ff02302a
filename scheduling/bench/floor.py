"""The floor of `bench_publish`: the least a publisher can do, at the same concurrency as the real workers.

Run as `python -m scheduling.bench.floor --threads N` (with the bench settings in the environment). Each
thread loops: one SQL statement claims a few due posts and returns everything needed to publish them,
the real platform client publishes each one (same HTTP calls as the real publisher, on a keep-alive
client), and one statement marks the batch done. No at-most-once bookkeeping, no events, no broker: the
cost of that is exactly what the comparison with the real pipeline shows. Runs until SIGTERM."""

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback

CLAIM_SQL = """
WITH claimed AS (
    UPDATE {post} SET status = 'publishing', attempts = attempts + 1
    WHERE id IN (
        SELECT id FROM {post} WHERE status = 'queued' AND due_at <= now()
        ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED
    )
    RETURNING id, container_id, social_account_id, prepared_publish_id
)
SELECT claimed.id, claimed.prepared_publish_id, c.media_type, c.media_urls, c.caption, a.platform,
    a.access_token_enc, i.platform_user_id
FROM claimed
JOIN {container} c ON c.id = claimed.container_id
JOIN {account} a ON a.id = claimed.social_account_id
JOIN {identity} i ON i.id = a.identity_id
"""

DONE_SQL = """
UPDATE {post} AS sp SET
    status = v.status,
    published_at = CASE WHEN v.status = 'published' THEN now() END,
    publish_id = v.publish_id,
    external_id = v.external_id,
    external_url = v.external_url
FROM (VALUES {values}) AS v(id, status, publish_id, external_id, external_url)
WHERE sp.id = v.id
"""


def _tables() -> dict[str, str]:
    from accounts.models import PlatformIdentity, SocialAccount
    from scheduling.models import ContentContainer, ScheduledPost

    return {
        "post": ScheduledPost._meta.db_table,
        "container": ContentContainer._meta.db_table,
        "account": SocialAccount._meta.db_table,
        "identity": PlatformIdentity._meta.db_table,
    }


def _publish_one(http, row) -> tuple[str, str, str, str, str]:
    from accounts import crypto
    from accounts.platforms.base import MediaItem, PlatformError
    from accounts.platforms.clients import get_client

    post_id, prepared, media_type, media_urls, caption, platform, token_enc, user_id = row
    if isinstance(media_urls, str):  # Django's psycopg setup leaves jsonb undecoded in raw queries
        media_urls = json.loads(media_urls)
    client = get_client(platform, http=http)
    token = crypto.decrypt(token_enc) or ""
    kind = "video" if media_type == "video" else "image"
    try:
        # An Instagram container made ahead (the bench prepares them for every variant) is used as it is.
        publish_id = (
            prepared
            or client.publish(
                access_token=token,
                platform_user_id=user_id,
                mode="publish",
                media_type=media_type,
                media=[MediaItem(url=url, kind=kind) for url in media_urls],
                caption=caption,
            ).publish_id
        )
        while True:
            status = client.publish_status(
                access_token=token, platform_user_id=user_id, publish_id=publish_id, caption=caption
            )
            if status.state != "processing":
                break
            time.sleep(0.5)
    except PlatformError as exc:
        print(f"floor: {post_id} failed: {type(exc).__name__} {exc}", flush=True)
        return (post_id, "failed", "", "", "")
    state = "published" if status.state in ("published", "sent_to_inbox") else "failed"
    return (post_id, state, publish_id, status.external_id or "", status.external_url or "")


def _loop(batch: int, stop: threading.Event) -> None:
    try:
        _claim_and_publish(batch, stop)
    except Exception:
        traceback.print_exc()
        raise


def _claim_and_publish(batch: int, stop: threading.Event) -> None:
    from django.db import connection

    from accounts.platforms.http import platform_http_client

    tables = _tables()
    claim = CLAIM_SQL.format(**tables)
    with platform_http_client() as http:
        while not stop.is_set():
            with connection.cursor() as cursor:
                cursor.execute(claim, [batch])
                rows = cursor.fetchall()
            if not rows:
                time.sleep(0.05)
                continue
            done = [_publish_one(http, row) for row in rows]
            values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(done))
            with connection.cursor() as cursor:
                cursor.execute(DONE_SQL.format(values=values, **tables), [v for row in done for v in row])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.bench")
    import django

    django.setup()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [
        threading.Thread(target=_loop, args=(args.batch, stop), name=f"floor-{n}", daemon=True)
        for n in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    print("floor ready", flush=True)
    while not stop.is_set():
        stop.wait(0.5)
    sys.exit(0)


if __name__ == "__main__":
    main()
