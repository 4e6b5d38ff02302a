# The partner's list of a project's posts filtered by status (`?status=failed`) or by account went through
# sp_project_newest: it walked the project's posts newest first and filtered them until it had a page (every
# post of the project for a status the project rarely has), or read every post of that status of every
# organization and sorted them; an account's posts, all of them and sorted. Each filter gets its range in the
# list's order: (project, status) and (social_account). With both filters the planner takes the narrower of
# them and sp_account_status (social_account, status), left as it is. Measured on 200,000 posts of a project
# (BENCHMARKS.md, "Filtered lists of posts").
#
# Built concurrently: posts are written all through the deploy. Not atomic; safe to run again if interrupted
# (AddIndexWithoutBlocking keeps an index found built).

from django.db import migrations, models

from config.migrationops import AddIndexWithoutBlocking


class Migration(migrations.Migration):
    atomic = False
    dependencies = [
        ("scheduling", "0018_scheduledpost_cancel_reason"),
    ]

    operations = [
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(fields=["project", "status", "-created_at", "-id"], name="sp_project_status_newest"),
        ),
        AddIndexWithoutBlocking(
            model_name="scheduledpost",
            index=models.Index(fields=["social_account", "-created_at", "-id"], name="sp_account_newest"),
        ),
    ]
