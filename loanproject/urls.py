from django.contrib import admin
from django.urls import include, path

from loans import views
from loans.metrics import metrics_view

from . import health

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),  # Prometheus; who may scrape: METRICS_TOKEN in settings
    path("admin/", admin.site.urls),
    path("api/v1/", include("loans.api.urls")),
    path("", include("loans.pages.urls")),
]

handler404 = "loans.api.schema.not_found"  # /api/...: the error shape, not an HTML page
