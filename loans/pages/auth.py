"""Pages: Sign-In with Ethereum in the browser (EIP-4361 through the wallet, EIP-1193)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
