"""Drive the connect flow the way a partner and its customer do: oauth-url → consent on the sandbox
page → the platform's redirect to our callback → the partner's returnUrl."""

from urllib.parse import urljoin, urlsplit

from django.test import Client

from tests.platform_helpers import consent

RETURN_URL = "https://app.acme.test/connected"


def start(tenant, platform: str, *, project=None, return_url: str = RETURN_URL, **extra) -> dict:
    project = project or tenant.project
    response = tenant.client.post(
        f"/v1/projects/{project.id}/social/oauth-url",
        {"platform": platform, "returnUrl": return_url, **extra},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def sent_back_to(platform: str, url: str) -> str:
    """The Location our callback answers to send the customer to `url`: Instagram redirects to the callback
    with `#_`, which a browser carries over a redirect whose Location has no fragment (RFC 9110 10.2.2), so
    after Instagram the Location ends with an empty `#` (lands on `url#`, not `url#_`)."""
    return f"{url}#" if platform == "instagram" else url


def browse(session, method: str, url: str, **kwargs) -> tuple[str, list[str]]:
    """Follow redirects as a browser does; returns (the URL it shows at the end, the Locations on the way).

    RFC 9110 10.2.2 / WHATWG fetch: a Location without a fragment component inherits the fragment of the
    URL it redirects from; one with a fragment, even an empty one (`…#`), does not. `requests` cannot stand
    in for the browser here: it treats an empty fragment as none."""
    fragment = url.split("#", 1)[1] if "#" in url else None
    hops: list[str] = []
    response = session.request(method, url.split("#", 1)[0], allow_redirects=False, timeout=20, **kwargs)
    while response.is_redirect:
        location = response.headers["Location"]
        hops.append(location)
        target, has_fragment, own = location.partition("#")
        fragment = own if has_fragment else fragment
        response = session.get(urljoin(response.url, target), allow_redirects=False, timeout=20)
    assert response.status_code == 200, (response.status_code, hops)
    return response.url + ("" if fragment is None else f"#{fragment}"), hops


def follow_callback(location: str):
    """GET our callback as the customer's browser would (the fragment Instagram adds is never sent)."""
    parts = urlsplit(location.split("#", 1)[0])
    return Client().get(f"{parts.path}?{parts.query}")


def consent_and_return(platform: str, authorize_url: str, username: str, decision: str = "approve"):
    return follow_callback(consent(platform, authorize_url, username, decision))


def connect(tenant, platform: str, username: str, **kwargs):
    """Full connect; returns (state, callback response)."""
    link = start(tenant, platform, **kwargs)
    return link["state"], consent_and_return(platform, link["authorizeUrl"], username)


def status(tenant, state: str) -> dict:
    response = tenant.client.get(f"/v1/social/oauth-status/{state}")
    assert response.status_code == 200, response.content
    return response.json()


def connected_account(tenant, platform: str, username: str, **kwargs) -> dict:
    state, response = connect(tenant, platform, username, **kwargs)
    assert response.status_code == 302, response.content
    body = status(tenant, state)
    assert body["status"] == "completed", body
    account = tenant.client.get(f"/v1/social-accounts/{body['socialAccountId']}")
    return account.json()


def reauthorize(tenant, account_id: str, platform: str, username: str):
    """The customer follows a reauth link for the account and consents again; the callback's response."""
    link = tenant.client.post(
        f"/v1/projects/{tenant.project.id}/social/reauth-url", {"socialAccountId": account_id}, format="json"
    )
    assert link.status_code < 300, link.content
    return consent_and_return(platform, link.json()["authorizeUrl"], username)
