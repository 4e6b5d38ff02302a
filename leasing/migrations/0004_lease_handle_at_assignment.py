from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leasing", "0003_lease_list_pages_on_account"),
    ]

    operations = [
        migrations.AddField(
            model_name="lease",
            name="handle",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        # Existing leases: the pool account's handle now is the best record of the one they were assigned under.
        migrations.RunSQL(
            "UPDATE leasing_lease SET handle = p.handle FROM leasing_poolaccount p "
            "WHERE leasing_lease.pool_account_id = p.id",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
