from config import requestid
from config.celery import app as celery_app

requestid.install()  # before any logging: the LOGGING format names %(request_id)s

__all__ = ["celery_app"]
