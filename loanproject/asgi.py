"""ASGI entry point: HTTP through Django, websockets through channels (the session's user in ``scope["user"]``,
origins checked against ALLOWED_HOSTS)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
django_asgi_app = get_asgi_application()

from loans.vault import require_keys  # noqa: E402

require_keys()  # no vault key with DEBUG off: refuse to serve (loans.vault)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from loans.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
