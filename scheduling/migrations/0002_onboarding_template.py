from django.db import migrations

ONBOARDING = {
    "name": "Social Account Onboarding",
    "layers": [
        {"kind": "account_health_monitor", "name": "Account Health Monitor"},
        {"kind": "social_distribution", "name": "Social Distribution"},
        {"kind": "social_engagement", "name": "Social Engagement"},
        {"kind": "account_warmup", "name": "Account Warmup"},
    ],
}


def create_template(apps, schema_editor):
    LayerTemplate = apps.get_model("scheduling", "LayerTemplate")
    LayerTemplate.objects.update_or_create(
        name=ONBOARDING["name"], defaults={"layers": ONBOARDING["layers"], "is_system": True}
    )


class Migration(migrations.Migration):
    dependencies = [("scheduling", "0001_initial")]
    operations = [migrations.RunPython(create_template, migrations.RunPython.noop)]
