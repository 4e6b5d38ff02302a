"""A migration, once committed, is never edited, deleted or renamed: databases that applied it keep what it
did then, and only a new migration reaches them. Edited, it makes a fresh database differ from every database
deployed before (cd4dd6f gave webhooks 0002 a database default only fresh databases got; 1d07921 moved an
index out of leasing 0007 and rebuilt it in 0008, which stopped the deploy of databases that had it). Deleted
and its number reused (09a5c8c's leasing 0007), its changes stay where it ran, and its replacement runs
there as well. The sha256 of every migration file is in MANIFEST: a file changed or gone fails here."""

import hashlib
from importlib import import_module
from pathlib import Path

from django.conf import settings

MANIFEST_NAME = "tests/config/applied_migrations.sha256"
MANIFEST = Path(settings.BASE_DIR) / MANIFEST_NAME

NEVER_EDIT = (
    "Never edit, delete or rename a migration once it is committed: a database that applied it never sees "
    "the change. Put it back as it was and add a new migration that makes the change."
)


def _migration_files() -> dict[str, Path]:
    """The project's migration files (not those of the packages it uses), by path from the project's root."""
    from django.db.migrations.loader import MigrationLoader

    root = Path(settings.BASE_DIR).resolve()
    files = {}
    for migration in MigrationLoader(None, ignore_no_migrations=True).disk_migrations.values():
        path = Path(import_module(type(migration).__module__).__file__).resolve()
        if root in path.parents and "site-packages" not in path.parts:
            files[path.relative_to(root).as_posix()] = path
    return files


def _manifest() -> dict[str, str]:
    """path → sha256, from the `sha256sum` lines of MANIFEST (lines starting with # are comments)."""
    entries = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, path = line.split(maxsplit=1)
            entries[path.lstrip("*")] = digest
    return entries


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_migrations_are_found():
    # were the lookup to come out empty, the checks below would pass on nothing
    files = _migration_files()
    assert "leasing/migrations/0007_lease_charges_settled.py" in files
    assert "accounts/webhooks/migrations/0002_delivery_retry_window_start.py" in files
    assert len(files) >= 30


def test_no_committed_migration_is_edited_deleted_or_renamed():
    files, recorded = _migration_files(), _manifest()

    edited = sorted(path for path, digest in recorded.items() if path in files and _sha256(files[path]) != digest)
    gone = sorted(path for path in recorded if path not in files)

    assert not (edited or gone), (
        f"{NEVER_EDIT}\n"
        + "".join(f"  edited since committed: {path}\n" for path in edited)
        + "".join(f"  deleted or renamed: {path}\n" for path in gone)
        + f"(Compared with {MANIFEST_NAME}; `sha256sum -c {MANIFEST_NAME}` from the project's root says the same. "
        "Only a migration of your own change, not yet merged, so applied by no deployed database, may still be "
        "edited: then update its line.)"
    )


def test_every_migration_is_in_the_manifest():
    files, recorded = _migration_files(), _manifest()

    new = sorted(path for path in files if path not in recorded)

    assert not new, (
        f"Migrations not yet in {MANIFEST_NAME}: add each new migration's line, when it is final, so that it "
        f"cannot change once databases have applied it; from the project's root:\n"
        + "".join(f"  sha256sum {path} >> {MANIFEST_NAME}\n" for path in new)
        + NEVER_EDIT
    )
