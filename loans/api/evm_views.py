"""/api/v1/: the contract calls of both parties, prepared for a wallet or sent with the lender's server key;
wallet-reported transactions; the lender's queue."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
