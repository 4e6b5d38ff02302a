"""`manage.py bench_billing`: the monthly renewal job over many due leases next to a single `INSERT … SELECT`
floor, and a second run that must charge nothing. See billing/bench.py for what is measured and
BENCHMARKS.md for the figures."""

import json
import os
import signal
import time
from dataclasses import asdict

from django.core.management import call_command
from django.core.management.base import CommandError

from billing.services import DEFAULT_BATCH
from config.bench import harness
from config.bench.command import BenchCommand

QUICK = {"leases": 2000, "organizations": 20, "rounds": 1}
JOB_TARGET, SECOND_RUN_TARGET = 5.0, 0.10  # ≤ 5 × the floor; a second run ≤ 10 % of the first


class Command(BenchCommand):
    quick = QUICK
    ranges = {"leases": (1, 1_000_000), "organizations": (1, 10_000), "rounds": (1, 20), "batch_size": (1, 1_000_000)}
    help = (
        "Benchmark the monthly lease renewal job: N due leases charged by the job, next to one INSERT … SELECT "
        "writing the same charges (the floor), then the job again at the same instant (it must charge "
        "nothing). Runs on throw-away PostgreSQL databases (127.0.0.1:5432)."
    )

    def add_bench_arguments(self, parser):
        parser.add_argument("--leases", type=int, default=50_000, help="due leases")
        parser.add_argument("--organizations", type=int, default=200, help="organizations they are spread over")
        parser.add_argument("--rounds", type=int, default=3, help="rounds, each on fresh copies of the data")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="leases per job transaction")

    def reexec(self, options):
        opts = self.plain_options(options)
        if opts["organizations"] > opts["leases"]:
            raise CommandError(f"--organizations must be at most --leases ({opts['leases']})")
        db_name = options["db_name"] or f"layers_bench_{os.getpid()}"
        harness.check_db_name(db_name + "_f20")  # room for the copies' suffix within the name pattern
        harness.reexec("bench_billing", opts, db_name=db_name)

    def run(self, opts: dict) -> None:
        from billing import bench

        quiet, out = opts["json"], self.printer(opts)
        db = os.environ["LAYERS_BENCH_DB"]
        # Seeding writes ~6 rows per lease; each round copies the database twice and runs three statements.
        harness.arm_hard_limit("bench_billing", int(300 + opts["leases"] / 100 + opts["rounds"] * opts["leases"] / 200))
        try:
            started = time.monotonic()
            harness.create_database(db)
            call_command("migrate", verbosity=0, interactive=False)
            info = harness.machine()
            out(f"bench_billing on {harness.machine_line(info)}")
            out(f"  database {db} created and migrated in {time.monotonic() - started:.1f} s")
            seeded = bench.seed(organizations=opts["organizations"], leases=opts["leases"])
            out(
                f"  seeded {seeded.leases} due leases over {seeded.organizations} organizations in "
                f"{seeded.seconds:.1f} s; {opts['rounds']} round(s), batch size {opts['batch_size']}"
            )
            results, finance = bench.measure(
                template=db, seeded=seeded, rounds=opts["rounds"], batch_size=opts["batch_size"], out=out
            )
        finally:
            signal.alarm(0)
            harness.drop_database(db)
        report = {
            "machine": info,
            "leases": seeded.leases,
            "organizations": seeded.organizations,
            "batch_size": opts["batch_size"],
            "rounds": bench.as_dicts(results),
            "finance_report": asdict(finance),
            **bench.summary(results),
        }
        if quiet:
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(_text(report))
        if report["problems"]:
            raise CommandError("the job's results are wrong: " + "; ".join(report["problems"]))


def _text(report: dict) -> str:
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    job, second = report["job_vs_floor"], report["second_vs_first"]
    return "\n".join(
        [
            "",
            f"medians of {len(report['rounds'])} round(s), {report['leases']} due leases:",
            f"  floor (one INSERT … SELECT)     {report['floor_seconds']:8.2f} s",
            f"  renewal job, first run          {report['first_seconds']:8.2f} s   "
            f"{job:.2f} × floor (target ≤ {JOB_TARGET:g}: {verdict(job <= JOB_TARGET)})",
            f"  renewal job, second run         {report['second_seconds']:8.3f} s   "
            f"{second:.1%} of the first (target ≤ {SECOND_RUN_TARGET:.0%}: {verdict(second <= SECOND_RUN_TARGET)})",
            f"  finance report of {report['finance_report']['month']}: page "
            f"{report['finance_report']['page_seconds']:.2f} s, CSV of "
            f"{report['finance_report']['csv_rows']} rows {report['finance_report']['csv_seconds']:.2f} s",
            "  results checked: "
            + ("PROBLEMS" if report["problems"] else "every due lease charged once, wallets equal their ledgers"),
        ]
    )
