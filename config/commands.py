"""Base for the management commands of API.md: each takes `--json` and then prints exactly one JSON
object on stdout (and nothing else), so automation and tests can read it: the result, or, when the command
is refused, `{"error": {"message": …}}` (the exit status is then 1 and the message also goes to stderr)."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import DataError

from config.api.ids import is_valid


class JsonCommand(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser):
        pass

    def handle(self, *args, **options):
        try:
            result, human = self._run(**options)
        except CommandError as exc:
            if options["json"]:  # a script reading stdout gets its one JSON object, saying what was refused
                self.stdout.write(json.dumps({"error": {"message": str(exc)}}))
            raise
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(human)

    def _run(self, **options) -> tuple[dict, str]:
        try:
            return self.run(**options)
        except (ValueError, LookupError) as exc:
            raise CommandError(str(exc))
        except DataError as exc:  # a value the database refuses: too long, a NUL byte, out of range
            raise CommandError(f"A value was refused by the database: {str(exc).splitlines()[0]}")

    def run(self, **options) -> tuple[dict, str]:
        """Do the work; return (JSON result, human-readable text)."""
        raise NotImplementedError


def get_or_fail(model, pk: str, what: str):
    prefix = getattr(model._meta.pk, "prefix", None)
    # A malformed id never reaches the database (PostgreSQL rejects e.g. a NUL byte with a DataError).
    obj = model.objects.filter(pk=pk).first() if prefix is None or is_valid(prefix, pk) else None
    if obj is None:
        raise CommandError(f"No {what} with id {pk!r}.")
    return obj
