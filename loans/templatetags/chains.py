"""``{% followed_chains as chains %}``: both watchers' cursors (``selectors.followed_chains``), for a page that says
how far it sees each chain, and in words when it cannot (``templates/loans/_heights.html``)."""

from __future__ import annotations

from django import template

from .. import selectors

register = template.Library()


@register.simple_tag
def followed_chains() -> dict[str, selectors.FollowedChain]:
    return selectors.followed_chains()
