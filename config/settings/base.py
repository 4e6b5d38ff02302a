"""Settings shared by every environment. Everything that differs between deployments comes from the
environment (DESIGN.md "Runtime contract"); with nothing set the service runs on embedded defaults."""

from datetime import timedelta
from pathlib import Path

import dj_database_url
from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

env = Env()
env.read_env(str(BASE_DIR / ".env"), recurse=False)

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="dev-only-insecure-key-do-not-use-in-production")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
PORT = env.int("PORT", default=8000)
LAYERS_PUBLIC_URL = env.str("LAYERS_PUBLIC_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[LAYERS_PUBLIC_URL])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "import_export",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "accounts",
    "scheduling",
    "leasing",
    "billing",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: SQLite under ./var by default (one command to run), PostgreSQL via DATABASE_URL.
DATABASE_URL = env.str("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web, worker and beat share the file: wait for locks instead of failing, and let readers in (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default=str(VAR_DIR / "static"))
MEDIA_URL = env.str("LAYERS_MEDIA_URL", default="/media/")
MEDIA_ROOT = env.str("LAYERS_MEDIA_ROOT", default=str(VAR_DIR / "media"))

# Storage: local media by default; an S3-compatible bucket (+ CDN domain) when a bucket is configured.
AWS_STORAGE_BUCKET_NAME = env.str("LAYERS_S3_BUCKET", default="")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
if AWS_STORAGE_BUCKET_NAME:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env.str("LAYERS_S3_ENDPOINT_URL", default=None),
            "custom_domain": env.str("LAYERS_CDN_DOMAIN", default=None),
            "querystring_auth": False,
            "file_overwrite": False,
        },
    }

# Cache (throttling counters): Redis when configured so limits hold across processes.
CACHE_URL = env.str("LAYERS_CACHE_URL", default="")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Django REST framework: every response and error goes through config/api ----------------------
LAYERS_API_RATE = env.str("LAYERS_API_RATE", default="1200/min")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["config.api.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["config.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.JSONObjectParser"],
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DATETIME_FORMAT": "iso-8601",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Layers partner API",
    "DESCRIPTION": (BASE_DIR / "config" / "api" / "openapi_description.md").read_text(),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/v1",
    "ENUM_NAME_OVERRIDES": {},
}

# --- Layers -------------------------------------------------------------------------------------------
# Platforms: the local sandbox (default outside production) or the live TikTok / Instagram APIs.
LAYERS_PLATFORMS = env.str("LAYERS_PLATFORMS", default="sandbox")
# http:// return URLs for localhost / 127.0.0.1 only (dev, demo, tests); production settings turn it off.
LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = env.bool("LAYERS_ALLOW_HTTP_LOCALHOST_RETURN", default=True)
LAYERS_OAUTH_STATE_TTL = timedelta(seconds=env.int("LAYERS_OAUTH_STATE_TTL_SECONDS", default=30 * 60))
LAYERS_IDEMPOTENCY_TTL = timedelta(hours=24)
# Fernet keys for platform tokens, comma-separated; the first encrypts, all decrypt (rotation).
LAYERS_TOKEN_KEYS = env.list("LAYERS_TOKEN_KEYS", default=[])
# Request bodies larger than this are refused before parsing.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("LAYERS_MAX_BODY_BYTES", default=1024 * 1024)

# --- Celery: filesystem broker by default (no server), Redis / RabbitMQ via CELERY_BROKER_URL --------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Periodic tasks are declared here; django-celery-beat's DatabaseScheduler installs them into its tables at
# start-up (idempotently, by name), where staff can pause or re-time them in the admin.
CELERY_BEAT_SCHEDULE = {
    "purge-idempotency-keys": {"task": "accounts.tasks.purge_idempotency_keys", "schedule": 3600.0},
}

# --- allauth: staff sign-in with MFA; nobody signs up -------------------------------------------------
ACCOUNT_ADAPTER = "accounts.auth.StaffOnlyAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_URL = "/staff/login/"
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "Layers"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LAYERS_LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
