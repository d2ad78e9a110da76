import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
application = get_wsgi_application()

from loans.vault import require_keys  # noqa: E402

require_keys()  # no vault key with DEBUG off: refuse to serve (loans.vault)
