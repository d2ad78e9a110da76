"""Pages: the borrower's steps, one page each."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
