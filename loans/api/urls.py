"""/api/v1/: the reads, Sign-In with Ethereum, the OpenAPI schema and its docs page (served from our own static
files, drf-spectacular-sidecar: no CDN)."""

from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import alert_views, auth, bitcoin_views, evm_views, operator_views, views

app_name = "api"

urlpatterns = [
    path("loans/", views.LoanList.as_view(), name="loan-list"),
    path("loans/<int:pk>/", views.LoanDetail.as_view(), name="loan-detail"),
    path("loans/<int:pk>/timeline/", views.LoanTimeline.as_view(), name="loan-timeline"),
    path("loans/<int:pk>/presignature/", views.LoanPresignature.as_view(), name="loan-presignature"),
    path("loans/<int:pk>/loan-file/", views.LoanFile.as_view(), name="loan-file"),
    path("parameters/", views.ParametersInForce.as_view(), name="parameters"),
    *evm_views.urlpatterns,
    *bitcoin_views.urlpatterns,
    *operator_views.urlpatterns,
    *alert_views.urlpatterns,
    path("auth/nonce", auth.NonceView.as_view(), name="auth-nonce"),
    path("auth/siwe", auth.SignInView.as_view(), name="auth-siwe"),
    path("auth/logout", auth.LogoutView.as_view(), name="auth-logout"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    path(
        "docs/",
        # Its script is a file (?script), not inline; only its template's <style> block needs 'unsafe-inline'.
        csp_update({"style-src": ["'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api:schema", permission_classes=[], authentication_classes=[])
        ),
        name="docs",
    ),
]
