# Two commands: `make run` starts web + workers + beat on embedded defaults, `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# `make run PORT=8765` (or PORT in the environment) reaches the processes; PORT in .env or LAYERS_ENV_FILE is
# read by the settings, which derive LAYERS_PUBLIC_URL (OAuth callbacks, the banner) from it: gunicorn binds
# the port the settings say (RUN_PORT, asked of them like WEBHOOK_QUEUE below), never another one.
ifdef PORT
export PORT
endif
RUN_PORT = $(shell $(if $(PORT),PORT=$(PORT) )$(PY) manage.py shell --no-imports -c "from django.conf import settings; print(settings.PORT)")
# Webhook sends run on workers of their own, on the queue the settings route them to (LAYERS_WEBHOOK_QUEUE,
# from the environment or .env; empty: the default queue). Asked of the settings themselves, when the run
# recipe is expanded (after install), so that the worker listens where the tasks go.
WEBHOOK_QUEUE = $(shell $(PY) manage.py shell --no-imports -c "from django.conf import settings; print(settings.LAYERS_WEBHOOK_QUEUE or 'celery')")
# Staff's bulk work (the rest of an admin action over a whole list, the revokes it hands over) has a worker of its
# own too, on LAYERS_BULK_QUEUE (empty: the default queue), asked of the settings the same way.
BULK_QUEUE = $(shell $(PY) manage.py shell --no-imports -c "from django.conf import settings; print(settings.LAYERS_BULK_QUEUE or 'celery')")

.PHONY: install run test lint format chromium redis pgready

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's chromium, never a downloaded browser build.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The fault-injection tests (tests/reliability) start their own redis-server on a loopback port.
redis:
	@command -v redis-server >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null)

# The suite runs against real PostgreSQL (DATABASE_URL, default postgres@127.0.0.1:5432/layers).
pgready:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
	@psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='layers'" | grep -q 1 \
		|| psql -h 127.0.0.1 -U postgres -qc "create database layers"

run: install
	@mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo
	@trap 'trap - INT TERM EXIT; wait' INT; trap 'trap - INT TERM EXIT; kill 0' TERM EXIT; \
	$(VENV)/bin/celery -A config worker -l info --pool threads --concurrency 8 -Q celery -n main@%h & \
	$(VENV)/bin/celery -A config worker -l info --pool threads --concurrency 4 -Q $(WEBHOOK_QUEUE) -n webhooks@%h & \
	$(VENV)/bin/celery -A config worker -l info --pool threads --concurrency 4 -Q $(BULK_QUEUE) -n bulk@%h & \
	$(VENV)/bin/celery -A config beat -l info --scheduler django_celery_beat.schedulers:DatabaseScheduler & \
	$(VENV)/bin/gunicorn config.wsgi -c config/gunicorn_conf.py --bind 127.0.0.1:$(RUN_PORT) & \
	wait -n  # if any of them dies, stop them all (the EXIT trap) rather than run on half-broken
# Ctrl-C already signals every process of the group: the INT trap only waits for them. Signalling them again
# (as the TERM and EXIT traps do) made celery beat run its shutdown handler inside itself and hang on its own
# database connection.

# After the suite, RELIABILITY.md's figures are rewritten from what this run wrote to var/reliability/
# (whether it passed or not: the figures say what failed); the exit status is pytest's.
test: install chromium redis pgready
	@status=0; LAYERS_TEST_TABLESPACE=$$(bash .ci/test-tablespace) $(VENV)/bin/pytest -q || status=$$?; \
	$(PY) manage.py reliability_report; exit $$status

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
