"""Ops releasing many leases at once ("Select all" of a partner's leases, or of the pool accounts TikTok banned,
then the confirmation page's Yes). Each release is its own transaction (the lease, the wallet, the pool account,
the posts, the events: 15 ms), so 10,000 took two and a half minutes in one web request and answered 10,000
messages. The first RELEASES_IN_REQUEST are released in the request, a worker releases the rest, and the page
counts them."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import LogEntry
from django.test import Client

from leasing import admin as leasing_admin
from leasing.models import Lease
from tests.billing.factories import lease_assign
from tests.platform_helpers import held_tasks
from tests.staff import staff_login, superuser

pytestmark = pytest.mark.django_db

LEASES = "/admin/leasing/lease/"


def test_releasing_more_leases_than_a_request_should_hands_the_rest_to_a_worker(owner, monkeypatch):
    monkeypatch.setattr(leasing_admin, "RELEASES_IN_REQUEST", 12, raising=False)
    leases = [lease_assign(owner).pk for _ in range(30)]
    ops = staff_login(Client(), superuser())
    first = min(leases)
    data = {"action": "release_leases", ACTION_CHECKBOX_NAME: [first], "select_across": "1", "index": "0"}

    with held_tasks() as held:
        page = ops.post(LEASES, {**data, "post": "yes"}, follow=True)

    assert Lease.objects.filter(released_at__isnull=False).count() == 12
    told = [str(m) for m in page.context["messages"]]
    assert told[0] == "Leases: 12 released, 0 queued post(s) canceled.", told
    assert len(told) == 2 and "Leases: 18 more" in told[1] and "worker" in told[1], told
    # the history names the staff member for the releases made, and only those, so far
    assert LogEntry.objects.filter(object_id__in=[str(pk) for pk in leases]).count() == 12

    for task, args in held:
        if task.name.endswith("leases_release_by_staff"):
            task.run(*args)  # the worker

    assert Lease.objects.filter(released_at__isnull=True).count() == 0
    assert LogEntry.objects.filter(object_id__in=[str(pk) for pk in leases]).count() == 30
    assert all("ops" in lease.released_by.username for lease in Lease.objects.select_related("released_by"))
