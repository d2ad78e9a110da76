"""The suite-wide secret scan (``loans.tests.secret_scan``) works: the lender's keys and each pL are known to it as
soon as they are sealed, a log line at any level or a response carrying one is caught, and a pL revealed on chain
by acceptRepayment is allowed from then on."""

from __future__ import annotations

import base64
import logging

import pytest
from cryptography.fernet import Fernet
from django.http import HttpResponse
from django.urls import path, reverse
from rest_framework.test import APIClient

from bitcoin.keys import PrivateKey
from loans.models import Loan, User
from loans.services import lender_hash_commit_prepare
from loans.services.accounts import api_token_issue
from loans.services.lender_secrets import lender_key_store, lender_preimage_reveal
from loans.sync.evm import sync_evm
from loans.vault import Secret

from .factories import make_loan, make_user
from .secret_scan import SCAN, SecretLeaked, checked

pytestmark = pytest.mark.django_db
logger = logging.getLogger("loans.tests.secret_scan_probe")
ECHOED: dict[str, str] = {}


def echo(request):
    """A page that prints what a test put in ECHOED: in its body and in a header."""
    response = HttpResponse(ECHOED.get("body", ""))
    response["X-Echo"] = ECHOED.get("header", "")
    return response


urlpatterns = [path("echo/", echo)]


@pytest.fixture(autouse=True)
def vault_key(settings) -> None:
    settings.LOAN_VAULT_KEYS_FILE = ""
    settings.LOAN_VAULT_KEYS = Fernet.generate_key().decode()


@pytest.fixture
def stored_key() -> bytes:
    lender = make_user(User.Role.LENDER)
    key = PrivateKey.generate()
    lender_key_store(lender=lender, kind="bitcoin", private_key=Secret(key.secret), actor=lender)
    return key.secret


def test_a_stored_lender_key_is_known_to_the_scan(stored_key):
    assert SCAN.knows(stored_key)
    assert not SCAN.knows(PrivateKey.generate().secret)


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.ERROR])
def test_a_lender_key_in_a_log_line_at_any_level_is_caught(stored_key, level):
    caught = pytest.raises(SecretLeaked, match=r"a lender private key .* in log loans\.tests\.secret_scan_probe")
    with caught, checked():
        logger.log(level, "signing with %s", stored_key.hex())
    with pytest.raises(SecretLeaked), checked():
        logger.warning("key %s", base64.b64encode(stored_key).decode())  # another printing of it
    with checked():  # what is not a secret passes
        logger.info("signing with the lender's key %s", PrivateKey(stored_key).xonly_pubkey.hex())


def test_a_lender_key_in_a_traceback_is_caught(stored_key):
    with pytest.raises(SecretLeaked), checked():
        try:
            raise ValueError(f"bad key {stored_key.hex()}")
        except ValueError:
            logger.exception("failed")


@pytest.mark.urls("loans.tests.test_secret_scan")
@pytest.mark.parametrize("part", ["body", "header"])
def test_a_lender_key_in_a_response_body_or_header_is_caught(client, stored_key, part):
    ECHOED.clear()
    ECHOED[part] = f"key={stored_key.hex()}"
    with pytest.raises(SecretLeaked, match=f"in response GET /echo/ {part}"), checked():
        client.get("/echo/")
    ECHOED.clear()
    with checked():
        assert client.get("/echo/").status_code == 200


def test_the_scan_does_not_say_the_secret(stored_key):
    with pytest.raises(SecretLeaked) as leak, checked():
        logger.error("%s", stored_key.hex())
    assert stored_key.hex() not in str(leak.value)


def test_a_preimage_made_for_a_loan_is_known_and_caught_before_it_is_revealed():
    lender = make_user(User.Role.LENDER)
    loan = make_loan(status=Loan.Status.REQUESTED)
    lender_hash_commit_prepare(loan=loan, actor=lender)
    loan.refresh_from_db()
    # pL only leaves the vault once the loan is in repayment: read it the way the test has to
    Loan.objects.filter(pk=loan.pk).update(status=Loan.Status.REPAYMENT_IN_PROGRESS)
    preimage = lender_preimage_reveal(loan=loan)
    assert SCAN.knows(preimage)
    with pytest.raises(SecretLeaked, match="a lender preimage pL"), checked():
        logger.info("accepting with %s", preimage.hex())


@pytest.mark.integration
def test_a_preimage_revealed_by_accept_repayment_is_allowed(desk, settings):
    loan = desk.draft()
    contract_id = desk.request(loan)
    desk.sync()
    lender = desk.lender.user
    lender_hash = lender_hash_commit_prepare(loan=Loan.objects.get(pk=loan.pk), actor=lender)
    desk.client.send(desk.client.commit_lender_hash(contract_id, lender_hash), desk.lender.account)
    desk.flow.offer(contract_id)
    desk.flow.accept(contract_id, desk.secrets[loan.pk])
    desk.flow.repay(contract_id)
    desk.sync()
    loan.refresh_from_db()
    preimage = lender_preimage_reveal(loan=loan)
    assert SCAN.knows(preimage)
    with pytest.raises(SecretLeaked), checked():  # in repayment, not yet accepted: still the lender's secret
        logger.info("about to accept with %s", preimage.hex())

    desk.client.send(desk.client.accept_loan_repayment(contract_id, preimage), desk.lender.account)
    sync_evm(w3=desk.w3, confirmations=1)
    loan.refresh_from_db()
    assert (loan.status, loan.lender_preimage) == (Loan.Status.REPAID, preimage.hex())

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_issue(user=lender)[0]}")
    with checked():  # public now: in a log line and in the loan's detail
        logger.info("accepted with %s", preimage.hex())
        response = client.get(reverse("api:loan-detail", args=[loan.pk]))
    assert response.status_code == 200 and response.json()["evm"]["lender_preimage"] == preimage.hex()
    assert not SCAN.knows(preimage)
