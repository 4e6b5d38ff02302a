from celery import Celery
from celery.signals import task_postrun, task_prerun

from config import envfile

envfile.load()

app = Celery("layers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect(weak=False)
@task_postrun.connect(weak=False)
def _database_connections_as_for_requests(task=None, **kwargs):
    """Around every task, what Django does around every request: close this thread's database connection
    only if it is broken or older than CONN_MAX_AGE. Celery's own Django fixup would close it before and
    after every task (CELERY_DB_REUSE_MAX in settings stops that), and a new PostgreSQL connection per
    task cost more than a publish's own queries. Eager tasks (tests) run inside the caller's transaction
    and are left alone."""
    if task is not None and not getattr(task.request, "is_eager", False):
        from django.db import close_old_connections

        close_old_connections()
