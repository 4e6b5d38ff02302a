from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Partners and accounts"

    def ready(self):
        import accounts.checks  # noqa: F401  (registers the check that the stored secrets decrypt)
        import config.api.schema  # noqa: F401  (registers the OpenAPI auth extension)
        from config import pgprepared, pgtime

        pgtime.install()  # psycopg's C loader for timestamps (config/pgtime.py)
        pgprepared.install()  # prepared statements made stale by a migration (config/pgprepared.py)

        from allauth.mfa.signals import authenticator_added

        from accounts.staff_mfa import record_mfa_on_activation

        # The session that activates TOTP has passed MFA (accounts/staff_mfa.py).
        authenticator_added.connect(record_mfa_on_activation, dispatch_uid="layers-record-mfa-on-activation")
