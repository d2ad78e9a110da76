"""/api/v1/: the Bitcoin actions: pre-signed ladders, TX_release and TX_exit PSBTs, broadcasts, the lender's
TX_1 and TX_capture."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
