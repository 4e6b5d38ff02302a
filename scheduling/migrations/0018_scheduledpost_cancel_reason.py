# Why a post was canceled, as data (ScheduledPost.cancel_reason): the API tells the partner a post canceled by a
# revoke, a lease release, an off-boarding or Layers staff why (serializers.post_error), which the free-text
# canceled_by, naming staff and API keys, could not be shown for.
#
# Not filled in for the posts canceled already, nor for those the release still serving cancels during the deploy
# (it updates without the column): their error stays null, as it was. canceled_by is not parsed to guess it.
#
# A constant database default (''): PostgreSQL adds the column without rewriting the table, an instant under the
# table's ACCESS EXCLUSIVE lock, taken under a lock timeout (AddFieldBriefly) so that the scheduling and the
# dispatcher of the release still serving never queue behind a long transaction; that release's inserts, without
# the column, get ''. On its own, atomic: the column and its migration's record commit together.

from django.db import migrations, models

from config.migrationops import AddFieldBriefly


class Migration(migrations.Migration):
    dependencies = [
        ("scheduling", "0017_posts_to_check_by_organization"),
    ]

    operations = [
        AddFieldBriefly(
            model_name="scheduledpost",
            name="cancel_reason",
            field=models.CharField(
                blank=True,
                choices=[
                    ("account_revoked", "Its account was revoked"),
                    ("lease_released", "Its leased account was released"),
                    ("offboarded", "The organization was off-boarded"),
                    ("staff", "Canceled by Layers staff"),
                ],
                db_default="",
                default="",
                editable=False,
                max_length=32,
            ),
        ),
    ]
