"""Development and demo: embedded defaults, sandbox platforms, debug pages."""

from .base import *  # noqa: F403
from .base import switch

DEBUG = switch("DJANGO_DEBUG", default=True)
