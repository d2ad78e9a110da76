from django.contrib import admin
from django.urls import include, path

from loans import views

from . import health

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("loans.api.urls")),
]

handler404 = "loans.api.schema.not_found"  # /api/...: the error shape, not an HTML page
