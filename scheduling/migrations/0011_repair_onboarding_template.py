"""Put back the built-in layers of a "Social Account Onboarding" template edited in the admin into something
provisioning cannot follow (free JSON: a bare kind, fewer kinds, a missing name). The admin no longer edits
it, and provisioning ignores such a template (scheduling.services._onboarding_layers), but a database that
saved one would show it in the admin and log a warning for every account provisioned until put right.
A well-formed template (one named layer per account kind, in any order, with any names) is left as it is."""

from django.db import migrations

ONBOARDING = "Social Account Onboarding"
# As 0002 created them. Written out: a migration does not read code that may change after it.
BUILT_IN = [
    {"kind": "account_health_monitor", "name": "Account Health Monitor"},
    {"kind": "social_distribution", "name": "Social Distribution"},
    {"kind": "social_engagement", "name": "Social Engagement"},
    {"kind": "account_warmup", "name": "Account Warmup"},
]
NAME_LENGTH = 128  # Layer.name


def well_formed(layers) -> bool:
    return (
        isinstance(layers, list)
        and all(isinstance(spec, dict) for spec in layers)
        and sorted(str(spec.get("kind")) for spec in layers) == sorted(spec["kind"] for spec in BUILT_IN)
        and all(isinstance(spec.get("name"), str) and 0 < len(spec["name"].strip()) <= NAME_LENGTH for spec in layers)
    )


def repair(apps, schema_editor):
    LayerTemplate = apps.get_model("scheduling", "LayerTemplate")
    template = LayerTemplate.objects.filter(name=ONBOARDING).first()
    if template is not None and not well_formed(template.layers):
        template.layers = BUILT_IN
        template.save(update_fields=["layers"])


class Migration(migrations.Migration):
    dependencies = [("scheduling", "0010_scheduledpost_canceled_by")]
    operations = [migrations.RunPython(repair, migrations.RunPython.noop)]
