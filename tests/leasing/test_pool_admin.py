"""Ops stock the pool in the admin: one by one, or by CSV import with row-level errors shown."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from leasing.models import PoolAccount
from tests.staff import with_mfa

HEADER = "handle,vertical,languages,geos,monthly_price_cents,audience_notes,warmup_state\n"


@pytest.fixture
def staff(db):
    user = with_mfa(get_user_model().objects.create_superuser("ops", "ops@layers.test", "pw-ops-12345"))
    client = Client()
    client.force_login(user)
    return client


def upload(staff, csv_text: str):
    page = staff.get("/admin/leasing/poolaccount/import/")
    assert page.status_code == 200
    formats = page.context["form"].fields["format"].choices
    csv_format = next(value for value, label in formats if str(label).lower() == "csv")
    return staff.post(
        "/admin/leasing/poolaccount/import/",
        {
            "format": csv_format,
            "import_file": SimpleUploadedFile("pool.csv", csv_text.encode(), content_type="text/csv"),
        },
    )


def test_csv_with_bad_rows_shows_them_and_imports_nothing(staff):
    response = upload(
        staff,
        HEADER
        + "fit.one,fitness,en-US,US;CA,4900,,warm\n"
        + "fit.two,fitness,english,US,4900,,warm\n"
        + "fit.three,fitness,en-US,ZZ,4900,,warm\n"
        + "fit.four,,en-US,US,-5,,warm\n",
    )
    text = response.content.decode()
    assert response.status_code == 200
    assert "BCP 47" in text and "ISO 3166-1" in text
    errors = text[text.index("Some rows failed to validate") :]
    assert all(handle in errors for handle in ("fit.two", "fit.three", "fit.four")) and "fit.one" not in errors
    assert not PoolAccount.objects.exists()


def test_valid_csv_imports_accounts_with_sandbox_tokens(staff):
    preview = upload(
        staff, HEADER + "fit.one,fitness,en-US;en-GB,us;ca,4900,gym,warm\nbeauty.two,beauty,fr-FR,FR,3900,,warming\n"
    )
    assert preview.status_code == 200
    confirm = preview.context["confirm_form"]
    done = staff.post(
        "/admin/leasing/poolaccount/process_import/",
        {**confirm.initial, "import_file_name": confirm.initial["import_file_name"]},
    )
    assert done.status_code in (200, 302)

    one = PoolAccount.objects.get(handle="fit.one")
    assert one.languages == ["en-US", "en-GB"] and one.geos == ["US", "CA"] and one.monthly_price_cents == 4900
    assert one.status == "available" and one.access_token
    assert PoolAccount.objects.get(handle="beauty.two").warmup_state == "warming"


def test_adding_one_account_in_the_admin(staff):
    response = staff.post(
        "/admin/leasing/poolaccount/add/",
        {
            "handle": "solo.fit",
            "display_name": "Solo",
            "vertical": "fitness",
            "audience_notes": "",
            "warmup_state": "warm",
            "monthly_price_cents": "5900",
            "status": "available",
            "languages_text": "en-US",
            "geos_text": "US, gb",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    account = PoolAccount.objects.get(handle="solo.fit")
    assert account.geos == ["US", "GB"] and account.access_token
    bad = staff.post(
        "/admin/leasing/poolaccount/add/",
        {
            "handle": "x",
            "vertical": "v",
            "warmup_state": "warm",
            "monthly_price_cents": "1",
            "status": "available",
            "languages_text": "nope!",
            "geos_text": "XX",
        },
    )
    assert bad.status_code == 200 and "BCP 47" in bad.content.decode()
