"""The chain watchers: follow each chain from a stored cursor, store every fact once, apply it once when final.

- ``evm``: logs of both contracts in bounded chunks (``sync_evm``)
- ``bitcoin``: blocks one by one (``sync_bitcoin``)
- ``locks``: one run per chain at a time, across processes

Entry points: ``loans.tasks`` (django-q2 schedules) and ``manage.py sync_chains [--once]``.
"""
