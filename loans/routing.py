"""Websocket routes. The live loan pages add their consumers here."""

websocket_urlpatterns: list = []
