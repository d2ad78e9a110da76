"""ASGI entry point: HTTP through Django, websockets through channels (routes added with the live pages)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
django_asgi_app = get_asgi_application()

from loans.vault import require_keys  # noqa: E402

require_keys()  # no vault key with DEBUG off: refuse to serve (loans.vault)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from loans.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
