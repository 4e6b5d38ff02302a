"""A partner asks support why its calls get 429 or 401. Django's own line ("Too Many Requests: /v1/projects")
names no key: each throttled or refused call now logs one line naming the key (its id and prefix, never the
key) and its organization, or, for a key Layers does not know, the first characters of its prefix."""

import logging

import pytest
from django.core.cache import cache

from accounts import services
from tests.conftest import assert_error

pytestmark = pytest.mark.urls("tests.config.plumbing_urls")


@pytest.fixture(autouse=True)
def _fresh_counters():
    cache.clear()
    yield
    cache.clear()


def lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name.startswith("config.api")]


def never_logged(caplog, *secrets: str) -> None:
    """No record of any logger carries one of `secrets`, in its message, its arguments or its traceback."""
    for record in caplog.records:
        text = " ".join([record.getMessage(), repr(record.args), str(record.exc_text or "")])
        for secret in secrets:
            assert secret not in text, record.getMessage()


def test_a_throttled_call_logs_its_key_and_organization(owner, settings, caplog):
    settings.LAYERS_API_RATE = "2/min"
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            assert owner.client.get("/v1/projects").status_code == 200
        assert_error(owner.client.get("/v1/projects"), 429, "RATE_LIMITED")

    (line,) = lines(caplog)
    assert "429" in line and "/v1/projects" in line
    assert owner.key.pk in line and owner.key.prefix in line
    assert owner.org.pk in line and owner.org.name in line
    never_logged(caplog, owner.raw_key, owner.raw_key.split("_", 2)[2])


def test_a_revoked_or_wrong_key_logs_which_key_was_refused(owner, sibling, anon, caplog):
    services.api_key_revoke(key=owner.key)
    # A live key's prefix, the rest mistyped. A key is lyr_<prefix>_<secret> and the secret (token_urlsafe) may
    # itself hold a "_": split at the first two. Split at the last, a secret ending "_o" made "o" the secret,
    # found in every log line.
    wrong = f"{'_'.join(sibling.raw_key.split('_', 2)[:2])}_{'x' * 43}"
    with caplog.at_level(logging.INFO):
        assert_error(owner.client.get("/v1/projects"), 401, "UNAUTHENTICATED")
        assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION=f"Bearer {wrong}"), 401, "UNAUTHENTICATED")

    revoked, mistyped = lines(caplog)
    for line, tenant in ((revoked, owner), (mistyped, sibling)):
        assert "401" in line and "/v1/projects" in line
        assert tenant.key.pk in line and tenant.key.prefix in line and tenant.org.pk in line
    assert "revoked" in revoked and "revoked" not in mistyped
    never_logged(caplog, owner.raw_key, owner.raw_key.split("_", 2)[2], sibling.raw_key, wrong)


def test_an_unknown_key_logs_only_the_start_of_its_prefix(anon, owner, settings, caplog):
    settings.LAYERS_AUTH_FAILURE_RATE = "2/min"
    unknown = "lyr_abcd12345678_" + "s" * 43
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION=f"Bearer {unknown}"), 401, "UNAUTHENTICATED")
        assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION=f"Bearer {unknown}"), 429, "RATE_LIMITED")
        assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")

    *refused, throttled, missing = lines(caplog)
    assert len(refused) == 2
    for line in (*refused, throttled):
        assert "unknown prefix lyr_abcd…" in line and "/v1/projects" in line
    assert "401" in refused[0] and "429" in throttled
    assert "401" in missing and "no API key" in missing
    never_logged(caplog, unknown, "lyr_abcd1234", "s" * 43)


def test_each_refused_or_throttled_call_is_one_line_in_the_log(owner, anon, settings, caplog):
    """Django's "Unauthorized: /v1/projects" / "Too Many Requests: …" line said again, without the key, what
    ours says: support counted every refusal twice."""
    settings.LAYERS_API_RATE = "1/min"
    with caplog.at_level(logging.INFO):
        assert owner.client.get("/v1/projects").status_code == 200
        assert_error(owner.client.get("/v1/projects"), 429, "RATE_LIMITED")
        assert_error(anon.get("/v1/projects"), 401, "UNAUTHENTICATED")
        assert_error(anon.get("/v1/projects", HTTP_AUTHORIZATION="Bearer lyr_nope_nope"), 401, "UNAUTHENTICATED")

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["config.api.throttling", "config.api.errors", "config.api.authentication"]


def test_refused_throttled_and_unknown_oauth_status_polls_are_logged_without_the_state(
    owner, outsider, anon, settings, caplog
):
    """A pending OAuth state is a bearer secret, and oauth-status carries it in its path: the 401 and 429 lines
    and Django's own "Not Found: …" line wrote it whole. They name it by the short state the admin lists."""
    pending = services.oauth_session_start(
        project=outsider.project, api_key=outsider.key, platform="tiktok", return_url="https://globex.test/back"
    ).session.state
    settings.LAYERS_API_RATE = "1/min"
    services.api_key_revoke(key=outsider.key)
    with caplog.at_level(logging.INFO):
        assert_error(owner.client.get(f"/v1/social/oauth-status/{pending}"), 404, "NOT_FOUND")  # another's
        assert_error(owner.client.get(f"/v1/social/oauth-status/{pending}"), 429, "RATE_LIMITED")
        assert_error(outsider.client.get(f"/v1/social/oauth-status/{pending}"), 401, "UNAUTHENTICATED")
        assert_error(anon.get(f"/v1/social/oauth-status/{pending}"), 401, "UNAUTHENTICATED")

    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(logged) == 4 and all(f"/v1/social/oauth-status/{pending[:10]}" in line for line in logged), logged
    assert "Not Found" in logged[0]  # Django's own line (django.request)
    never_logged(caplog, pending)
