"""One id per API request or task, on every log line it writes and on the response (`X-Request-Id`).

A partner quoting a failed call to support gives the response's X-Request-Id; support finds every line the
call wrote (the refusal naming the key, a platform error, a traceback) by that id instead of by time and
path. A load balancer's own id is kept when it sends one (`X-Request-Id`, 8–128 of [A-Za-z0-9._:-]), so its
access log and ours agree; anything else is replaced by a new `req_<hex>`.

The id lives in a context variable, set by the middleware at the start of a request and cleared when Django
says the request finished (request_finished): Django logs "Not Found: …" and the like after the middleware
has returned, and those lines carry it too. A worker sets `task:<task id>` around each task (config/celery.py).
Every log record gets it as `request_id` (a record factory: caplog and any handler see it), "-" outside both."""

import contextvars
import logging
import re
import uuid

from django.core.signals import request_finished
from django.dispatch import receiver

HEADER = "X-Request-Id"
NONE = "-"
_current = contextvars.ContextVar("layers_request_id", default=NONE)
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{8,128}")


def current() -> str:
    return _current.get()


def set_current(value: str) -> None:
    _current.set(value)


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if _ACCEPTED.fullmatch(incoming) else f"req_{uuid.uuid4().hex}"
        _current.set(request_id)
        response = self.get_response(request)
        response[HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="layers_request_id_cleared")
def _cleared(**kwargs):
    _current.set(NONE)


def install() -> None:
    """Give every log record the current id (once per process)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "layers_request_id", False):
        return

    def record(*args, **kwargs):
        made = previous(*args, **kwargs)
        made.request_id = _current.get()
        return made

    record.layers_request_id = True
    logging.setLogRecordFactory(record)
