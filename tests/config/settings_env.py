"""Load a settings module afresh, in this process, with a given environment: what a process starting with that
environment would end up with (or the ImproperlyConfigured that stops it), without a subprocess per case. The
running test settings are left alone: the fresh modules are dropped again and the loaded ones put back."""

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from config import envfile

# Every variable the settings read starts with one of these (or is PORT / DATABASE_URL): the test process's
# own (DJANGO_SETTINGS_MODULE, LAYERS_TEST_DB, a developer's LAYERS_*) must not leak into the loaded module.
READ_BY_SETTINGS = ("LAYERS_", "DJANGO_", "CELERY_", "AWS_")
PACKAGE = "config.settings"


def load_settings(module: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    for name in list(os.environ):
        if name.startswith(READ_BY_SETTINGS) or name in ("PORT", "DATABASE_URL"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # No `.env`: base.py reads the file config.envfile names when it is imported.
    monkeypatch.setattr(envfile, "ENV_FILE", Path("/nonexistent/.env"))
    package = sys.modules[PACKAGE]
    kept = {name: sys.modules.pop(name) for name in list(sys.modules) if name.startswith(f"{PACKAGE}.")}
    try:
        return importlib.import_module(f"{PACKAGE}.{module}")
    finally:
        for name in [name for name in sys.modules if name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
            if name not in kept:
                vars(package).pop(name.rpartition(".")[2], None)
        sys.modules.update(kept)
        for name, loaded in kept.items():
            setattr(package, name.rpartition(".")[2], loaded)
