"""The production settings for ``bench_desk_load.py``'s daphne, with one change: no persistent database connections.

Django's ASGI handler runs each request's synchronous code in a thread of its own, so with ``CONN_MAX_AGE`` above 0
(``loanproject.settings`` keeps connections 60 s) every request thread leaves its connection open behind it: 10
clients took the benchmark's database to 68 connections in seconds, and 50 clients exhausted the PostgreSQL
server's 100 (Django's documentation: disable persistent connections under ASGI). The benchmark shares that server,
so its server closes each connection at the end of its request.
"""

from loanproject.settings import *  # noqa: F403
from loanproject.settings import DATABASES

DATABASES["default"]["CONN_MAX_AGE"] = 0
