from celery import Celery
from celery.signals import import_modules, setup_logging, task_postrun, task_prerun

from config import envfile, requestid

envfile.load()

app = Celery("layers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect(weak=False)
def _django_logging(**kwargs):
    """Workers and beat log as the web processes do: Django's LOGGING, at LAYERS_LOG_LEVEL. With no receiver
    of this signal Celery takes the root logger over, at its own `-l` level (WARNING when none is given), so
    INFO lines of ours were lost whatever LAYERS_LOG_LEVEL said. worker_hijack_root_logger = False is not
    enough: Celery still sets the root logger's level to `-l`'s. With a receiver it leaves logging alone."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


@import_modules.connect(weak=False)
def _refuse_to_start_on_failed_checks(sender=None, **kwargs):
    """A worker or beat starting: Django's system checks, the database ones included, before it consumes or
    schedules anything. Celery's Django fixup runs the checks here too but ignores what they find; Celery
    re-raises what a receiver of this signal raises, which stops the process. Only at a worker's or beat's
    start (the loader's init_worker, which marks itself first), not when other code loads the task modules."""
    if sender is None or not sender.loader.worker_initialized:
        return
    from config import startup

    startup.refuse_to_start_on_failed_checks("celery")


@task_prerun.connect(weak=False)
def _task_id_on_log_lines(task=None, task_id=None, **kwargs):
    """A task's log lines carry `task:<id>` (config/requestid.py); an eager one (tests) runs inside the
    request that called it and keeps that request's id."""
    if task is not None and not getattr(task.request, "is_eager", False):
        requestid.set_current(f"task:{task_id}")


@task_postrun.connect(weak=False)
def _task_id_off_log_lines(task=None, **kwargs):
    if task is not None and not getattr(task.request, "is_eager", False):
        requestid.set_current(requestid.NONE)


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
