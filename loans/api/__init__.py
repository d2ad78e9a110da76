"""The REST API, /api/v1/ (Django REST framework): thin views over ``loans.selectors`` and ``loans.services``.

- ``errors``: one error shape ``{code, message, fields}`` and the stable codes (docs/api-errors.md)
- ``fields``: money as decimal strings of integers (sats, wei), never floats
- ``authentication``, ``throttles``, ``idempotency``: bearer tokens, rate limits, Idempotency-Key on every POST
- ``views``, ``auth``, ``serializers``, ``urls``: the endpoints
"""
