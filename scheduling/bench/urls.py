"""bench_api's URLs: the whole app, plus the trivial DRF view that is its floor."""

from django.urls import path

from config.urls import urlpatterns as app_urlpatterns
from scheduling.bench.api import TrivialApi

urlpatterns = [path("bench/trivial", TrivialApi.as_view()), *app_urlpatterns]

handler400 = "config.api.errors.handler400"
handler404 = "config.api.errors.handler404"
handler500 = "config.api.errors.handler500"
