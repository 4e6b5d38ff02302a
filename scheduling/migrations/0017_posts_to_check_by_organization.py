# The status-check claim reads each organization's posts awaiting their check on its own when more are due
# than its window holds (services.posts_claim_for_resolution, _claim_by_turns), so that one organization's
# campaign cannot hold back every other organization's posts becoming `published`. Without this index each
# organization's probe went through every due check of the table (0.9 s a claim with 1,000 organizations and
# 15,000 checks due; 25 ms with it). Partial (publishing posts only: those in flight), so it stays as small as
# sp_publishing_check. Built concurrently: posts are written all through the deploy. Not atomic; safe to run
# again if interrupted (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("scheduling", "0016_posts_due_by_organization"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(
                fields=["organization", "next_check_at"],
                condition=models.Q(status="publishing"),
                name="sp_org_check_publishing",
            ),
        ),
    ]
