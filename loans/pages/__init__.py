"""The browser's pages (server-rendered, htmx partials): sign-in, the borrower's steps, the lender's desk.

Each page module owns its ``urlpatterns``; ``loans.pages.urls`` includes them. Pages call the same services and
selectors as the REST API (ADR 0007): a page never holds a rule of its own.
"""
