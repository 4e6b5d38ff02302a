# Nullable and without a default: the release still running while this migrates neither reads nor writes it,
# and its inserts leave it null (no refresh underway).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("leasing", "0005_column_defaults_in_the_database"),
    ]

    operations = [
        migrations.AddField(
            model_name="poolaccount",
            name="refresh_claimed_until",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
