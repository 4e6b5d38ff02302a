# Every organization now gets its wallet when it is created (accounts.services.organization_create, the admin's
# add page), so that finance finds it in the wallet list at $0.00 before its first entry. The organizations an
# earlier release created without one get it here. Organizations number in the hundreds: one INSERT of the
# missing rows, which skips any a ledger writer of the release still serving creates meanwhile (its own
# insert skips ours the same way). Going back leaves the wallets: an earlier release reads them as its own.

from django.db import migrations


def open_missing_wallets(apps, schema_editor):
    Organization = apps.get_model("accounts", "Organization")
    Wallet = apps.get_model("billing", "Wallet")
    missing = Organization.objects.filter(wallet__isnull=True).values_list("pk", flat=True)
    Wallet.objects.bulk_create([Wallet(organization_id=pk) for pk in missing], ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [("billing", "0005_ledger_adjusted_lease_on_adjustments")]

    operations = [migrations.RunPython(open_missing_wallets, migrations.RunPython.noop)]
