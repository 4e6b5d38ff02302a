"""The `.env` file next to manage.py, read by every entry point (manage.py, wsgi, asgi, celery) before it
picks its settings module.

The settings read `.env` themselves, but by then the entry point has already chosen the module: a
DJANGO_SETTINGS_MODULE=config.settings.production written in `.env` was ignored and the service ran on dev
settings (DEBUG, the insecure key, none of production's refusals) without a word. The real environment
always wins over the file."""

import os
from pathlib import Path

from dotenv import dotenv_values

# LAYERS_ENV_FILE names another file (a deployment's, a test's); by default `.env` next to manage.py.
ENV_FILE = Path(os.environ.get("LAYERS_ENV_FILE") or Path(__file__).resolve().parent.parent / ".env")
DEFAULT_SETTINGS = "config.settings.dev"


def load() -> None:
    """Take DJANGO_SETTINGS_MODULE from `.env` unless the environment sets it, else default to dev. (The
    settings read every other variable of the file themselves, through their own Env.)"""
    chosen = dotenv_values(ENV_FILE).get("DJANGO_SETTINGS_MODULE") if ENV_FILE.exists() else None
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", chosen or DEFAULT_SETTINGS)
