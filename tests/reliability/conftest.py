import pytest

from tests.e2e.browser import point_platforms_at
from tests.reliability import figures as figures_module


@pytest.fixture
def live(live_server, settings):
    """The sandbox platforms served over real HTTP by the live test server, for this process and for the
    worker processes a test starts (they get the URL through LAYERS_PUBLIC_URL). The sandbox's per-minute
    limits are lifted: the faults these tests inject are chosen, not incidental."""
    point_platforms_at(settings, live_server.url)
    settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS = {k: 10_000 for k in settings.LAYERS_SANDBOX_TIKTOK_RATE_LIMITS}
    return live_server.url


@pytest.fixture
def figures(request):
    """figures(name, cases=…, faults_injected=…, losses=…, **details) → var/reliability/<name>.json."""

    def write(name: str, **values) -> dict:
        return figures_module.record(name, test=request.node.nodeid, **values)

    return write
