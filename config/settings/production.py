"""Production: refuses to start without real secrets, a real database and the live platforms."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, LAYERS_PLATFORMS, LAYERS_TOKEN_KEYS, SECRET_KEY, env

DEBUG = False
LAYERS_ALLOW_HTTP_LOCALHOST_RETURN = False
LAYERS_ALLOW_PRIVATE_FETCH = False
LAYERS_STAFF_MFA_REQUIRED = True

_problems = []
if not env.str("DJANGO_SECRET_KEY", default="") or SECRET_KEY.startswith("dev-only"):
    _problems.append("DJANGO_SECRET_KEY must be set")
if not LAYERS_TOKEN_KEYS:
    _problems.append("LAYERS_TOKEN_KEYS must list at least one Fernet key")
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    _problems.append("DATABASE_URL must point at PostgreSQL")
if LAYERS_PLATFORMS != "live":
    _problems.append("LAYERS_PLATFORMS must be 'live' (the sandbox is never mounted in production)")
if _problems:
    raise ImproperlyConfigured("Production settings refused: " + "; ".join(_problems))

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
