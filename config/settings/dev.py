"""Development and demo: embedded defaults, sandbox platforms, debug pages."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
