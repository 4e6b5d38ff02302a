"""The health probes, answered ahead of every other middleware but the request id's (config/requestid.py).

Load balancers and Kubernetes probe a process at its own address, and send that address as Host
(`Host: 10.0.0.5:18431`). Django's host check (ALLOWED_HOSTS, in request.get_host(), which SecurityMiddleware
and CommonMiddleware call) refused every such probe with a 400 and an ERROR log line, so a healthy service read
as down. This middleware, second in MIDDLEWARE, answers exactly /healthz and /readyz with their usual views and
never reads the Host (a query string does not matter, as before); every other path, /healthz/ included,
goes through the remaining middleware and the host check as before. The probes read no cookie, session or user and write
nothing, so skipping the middleware after this one changes nothing in their answer."""

from accounts import views

PROBES = {"/healthz": views.healthz, "/readyz": views.readyz}


class HealthProbeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        probe = PROBES.get(request.path_info)
        if probe is None:
            return self.get_response(request)
        return probe(request)
