# The renewal job's pick: the leases not settled, in id order (see 0007). Built concurrently: leases are
# assigned and released all through the deploy.

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("leasing", "0007_lease_charges_settled"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="lease",
            index=models.Index(
                condition=models.Q(("charges_settled", False)), fields=["id"], name="lease_charges_open"
            ),
        ),
    ]
