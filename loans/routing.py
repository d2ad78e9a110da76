"""Websocket routes (wrapped in the session's authentication by loanproject.asgi)."""

from django.urls import path

from .consumers import AlertsConsumer, LoanConsumer

websocket_urlpatterns = [
    path("ws/alerts/", AlertsConsumer.as_asgi()),
    path("ws/loans/<int:loan_id>/", LoanConsumer.as_asgi()),
]
