"""The home page: the whole page on a normal request, only the chain-status partial for htmx."""

from pathlib import Path

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_home_page_renders_with_the_chain_status(client, settings):
    settings.BITCOIN_RPC_URL = settings.EVM_RPC_URL = "http://127.0.0.1:9"  # discard port: nothing answers
    response = client.get(reverse("home"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" in body and 'id="chain-status"' in body
    assert "vendor/htmx-2.0.11.min.js" in body
    assert body.count('class="down"') == 2  # both nodes unreachable, each said so


def test_htmx_request_gets_only_the_partial(client, settings):
    settings.BITCOIN_RPC_URL = settings.EVM_RPC_URL = "http://127.0.0.1:9"
    response = client.get(reverse("home"), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in body
    assert body.lstrip().startswith('<section id="chain-status"')


def test_vendored_htmx_is_served(client):
    from django.contrib.staticfiles import finders

    path = finders.find("vendor/htmx-2.0.11.min.js")
    assert path is not None
    assert Path(path).read_text()[:200].startswith("var htmx=")
