"""Pages: the lender's desk: the queue, each loan's actions, the dashboard."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
