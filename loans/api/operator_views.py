"""/api/v1/: the operators' actions: the lender role, pausing new loans."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
