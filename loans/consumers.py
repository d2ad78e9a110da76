"""Websocket consumers: what the pages receive live.

``AlertsConsumer`` (``/ws/alerts/``): a signed-in user's own alerts as they are made (``services.alerts`` pushes
``alert.created`` to the user's group after commit). Anonymous connections are refused; a user hears only their
own group. The page lists alerts on load too, so a missed push loses nothing.
"""

from __future__ import annotations

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from .services.alerts import user_group_name


class AlertsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close(code=4401)
            return
        self.group = user_group_name(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)

    async def alert_created(self, event: dict) -> None:
        await self.send_json(
            {"type": "alert", "id": event["alert_id"], "kind": event["kind"], "subject": event["subject"]}
        )
