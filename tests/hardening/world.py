"""One of every object a partner can reach by id, built for a tenant through the API and the services
(so the rows carry their real invariants): the fuzzer aims its path parameters at them, and the
cross-organization matrix aims another organization at them."""

from dataclasses import dataclass, field

from accounts.models import OAuthSession
from leasing import services as leasing
from tests.accounts.oauth_helpers import connected_account, start
from tests.leasing.helpers import add_pool, request_accounts
from tests.scheduling.publish_helpers import later, run_dispatcher, schedule_now

# Webhook deliveries of the events these objects record go to a closed loopback port: refused at once,
# nothing leaves the machine.
HOOK_URL = "http://127.0.0.1:9/layers-hook"


@dataclass
class World:
    tenant: object
    ids: dict[str, str] = field(default_factory=dict)  # URL parameter name → id

    def by_param(self, name: str) -> str | None:
        return self.ids.get(name)


def build(tenant, *, handle: str, publish: bool = False) -> World:
    """A project with a connected account (via the sandbox consent flow), a pending OAuth state, a content
    container with a queued scheduled post, a lease request fulfilled with a leased account (and its first
    charge), and a webhook endpoint. With `publish`, one post is published too (for the posts list)."""
    tenant.client.credentials(HTTP_AUTHORIZATION=f"Bearer {tenant.raw_key}")
    return_url = "https://app.acme.test/back" if "app.acme.test" in tenant.key.allowed_return_domains else None
    return_url = return_url or f"https://{tenant.key.allowed_return_domains[0]}/back"
    account = connected_account(tenant, "tiktok", handle, return_url=return_url)
    state = start(tenant, "instagram", return_url=return_url)["state"]
    assert OAuthSession.objects.filter(pk=state, status="pending").exists()

    add_pool(1, vertical="fitness", language="en-US", geos=("US",), price=4900)
    lease_request = request_accounts(tenant, 1)
    assigned = leasing.lease_assign(request_id=lease_request["requestId"], auto=True)
    leased_ids = [lease.social_account_id for lease in assigned.leases.all()]
    assert len(leased_ids) == 1, assigned.status

    if publish:
        schedule_now(tenant, account["id"])
        run_dispatcher()
    post = schedule_now(tenant, account["id"], when=later(hours=2))

    endpoint = tenant.client.post(
        "/v1/webhook-endpoints", {"url": HOOK_URL, "events": ["scheduled_post.failed"]}, format="json"
    )
    assert endpoint.status_code == 201, endpoint.content

    ids = {
        "projectId": tenant.project.id,
        "accountId": account["id"],
        "state": state,
        "containerId": post["containerId"],
        "postId": post["id"],
        "requestId": lease_request["requestId"],
        "socialAccountId": leased_ids[0],
        "endpointId": endpoint.json()["id"],
    }
    return World(tenant=tenant, ids=ids)
