"""What every bench command shares: the command the user typed checks its options and re-executes itself
with the bench settings (harness.reexec, which does not return); the re-executed process runs `run()`.
A BenchError anywhere becomes a CommandError (a message, exit status 1, no traceback)."""

import os

from django.core.management.base import BaseCommand, CommandError

from config.bench import harness
from config.commands import JsonRefusals


def _shown(number: int | float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


class BenchCommand(JsonRefusals, BaseCommand):
    """A refusal with --json is one JSON object, as for every Layers command (config.commands)."""

    quick: dict = {}  # the option values of --quick (the smoke test's sizes)
    # Each numeric option's range, (least, most), by its name in the options: checked before anything is
    # started. A negative sandbox latency, nan or 1e300 got as far as the re-executed bench's settings, an
    # absurd count of posts or workers as far as seeding or starting them.
    ranges: dict[str, tuple[int | float, int | float]] = {}

    def add_arguments(self, parser):
        self.add_bench_arguments(parser)
        parser.add_argument("--db-name", default=None, help="bench database (default layers_bench_<pid>)")
        parser.add_argument(
            "--quick", action="store_true", help=f"a short run, the smoke test's: {self.quick_description()}"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    def add_bench_arguments(self, parser) -> None:
        """The command's own options."""

    def quick_description(self) -> str:
        return ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in self.quick.items())

    def handle(self, *args, **options):
        try:
            self._handle(options)
        except CommandError as exc:
            if options["json"]:
                self.refuse_in_json(exc)
            raise

    def _handle(self, options: dict) -> None:
        try:
            if not harness.is_inner():
                self.check_ranges(self.plain_options(options))
                self.reexec(options)
            try:
                self.run(harness.inner_options())
            finally:
                # The run's broker messages and cache entries (config/settings/bench.py: all under its prefix).
                harness.purge_redis_prefix(os.environ["LAYERS_BENCH_REDIS_PREFIX"])
        except harness.BenchError as exc:
            raise CommandError(str(exc)) from None

    def check_ranges(self, opts: dict) -> None:
        for name, (least, most) in self.ranges.items():
            value = opts.get(name)
            if value is not None and not least <= value <= most:  # nan is within no range
                raise CommandError(
                    f"--{name.replace('_', '-')} must be from {_shown(least)} to {_shown(most)} (not {_shown(value)})"
                )

    def reexec(self, options: dict) -> None:
        """Check the options (beyond `ranges`), then harness.reexec() this command with them."""
        raise NotImplementedError

    def run(self, opts: dict) -> None:
        """The bench itself, in the re-executed process (`opts` as passed to harness.reexec)."""
        raise NotImplementedError

    def plain_options(self, options: dict) -> dict:
        """The options that travel to the re-executed process (JSON-able, --quick's sizes applied)."""
        opts = {
            key: value
            for key, value in options.items()
            if key not in ("db_name", "quick") and isinstance(value, int | float | str | bool | type(None))
        }
        if options.get("quick"):
            opts.update(self.quick)
        return opts

    def printer(self, opts: dict):
        """A line printer that is silent when the command prints one JSON object (--json)."""

        def out(line: str) -> None:
            if not opts["json"]:
                self.stdout.write(line)
                self.stdout.flush()

        return out
