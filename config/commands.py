"""Base for the management commands of API.md: each takes `--json` and then prints exactly one JSON
object on stdout (and nothing else), so automation and tests can read it: the result, or, when the command
is refused, `{"error": {"message": …}}` (the exit status is then 1 and the message also goes to stderr).
A command that ran but whose outcome is a failure (lease_assign whose assignment failed) prints its result
all the same and exits 1, the message on stderr (CommandFailed): scripts that check only the exit status
are not told that nothing happened was a success."""

import json
import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DataError

from config.api.ids import is_valid


class CommandFailed(CommandError):
    """Raised by run() when the work was done but failed: the result is printed as usual, then the command
    exits 1 with `message` on stderr."""

    def __init__(self, message: str, *, result: dict, human: str):
        super().__init__(message)
        self.result, self.human = result, human


class JsonRefusals:
    """For a command taking --json: a refusal (a refused argument, a CommandError) is one JSON object on
    stdout, `{"error": {"message": …}}`, and exit status 1. Mixed into BaseCommand, before it."""

    def refuse_in_json(self, exc: CommandError) -> None:
        self.stdout.write(json.dumps({"error": {"message": str(exc)}}))

    def create_parser(self, prog_name, subcommand, **kwargs):
        """The parser, made to answer a refused argument (a missing option, a wrong type) with the same one
        JSON object as any other refusal when --json is among the arguments: argparse would otherwise print
        its usage on stderr only, and exit 2."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse_args = parser.parse_args

        def parse_args_json_aware(args=None, namespace=None):
            argv = sys.argv[2:] if args is None else [str(a) for a in args]
            if "--json" not in argv:
                return parse_args(args, namespace)
            parser.called_from_command_line = False  # argparse errors become CommandError, not an exit
            try:
                return parse_args(args, namespace)
            except CommandError as exc:
                self.refuse_in_json(exc)
                if self._called_from_command_line:
                    self.stderr.write(f"CommandError: {exc}")
                    sys.exit(exc.returncode)
                raise

        parser.parse_args = parse_args_json_aware
        return parser


class JsonCommand(JsonRefusals, BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        self.add_command_arguments(parser)

    def add_command_arguments(self, parser):
        pass

    def handle(self, *args, **options):
        try:
            result, human = self._run(**options)
        except CommandFailed as exc:
            self.stdout.write(json.dumps(exc.result) if options["json"] else exc.human)
            raise CommandError(str(exc)) from exc
        except CommandError as exc:
            if options["json"]:  # a script reading stdout gets its one JSON object, saying what was refused
                self.refuse_in_json(exc)
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
