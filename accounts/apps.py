from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Partners and accounts"

    def ready(self):
        import config.api.schema  # noqa: F401  (registers the OpenAPI auth extension)
        from config import pgprepared, pgtime

        pgtime.install()  # psycopg's C loader for timestamps (config/pgtime.py)
        pgprepared.install()  # prepared statements made stale by a migration (config/pgprepared.py)
