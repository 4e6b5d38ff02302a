from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Partners and accounts"

    def ready(self):
        import config.api.schema  # noqa: F401  (registers the OpenAPI auth extension)
