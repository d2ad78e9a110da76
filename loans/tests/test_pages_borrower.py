"""The borrower's pages (Django test client, no browser): my loans, a new loan, the loan page. Each page's htmx
partial is the same fragment as the whole page's; a refused action shows the service's code and message and changes
nothing; another borrower gets 404."""

from __future__ import annotations

import hashlib
import re
import uuid

import pytest
from django.urls import reverse

from bitcoin.addresses import encode_segwit_address
from bitcoin.keys import PrivateKey
from loans import funding
from loans.models import BorrowerSignature, ContractDeployment, Loan, User
from loans.qr import qr_svg
from loans.services import loan_create
from loans.templatetags.amounts import btc, rbtc

from .factories import evm_address, hex32, make_parameters, make_user

pytestmark = pytest.mark.django_db

AMOUNT_WEI = 10**16
LENDER_KEY = PrivateKey.generate()
BORROWER_KEY = PrivateKey.generate()


class _NoEstimate:
    def estimatesmartfee(self, conf_target, estimate_mode="conservative"):
        return {"errors": ["Insufficient data"], "blocks": 0}


@pytest.fixture(autouse=True)
def _desk(settings, monkeypatch):
    settings.BITCOIN_NETWORK = "regtest"
    settings.BITCOIN_MIN_FEE_RATE_SAT_VB = "1"
    settings.BITCOIN_MAX_FEE_RATE_SAT_VB = "500"
    settings.LENDER_BTC_PAYOUT_ADDRESS = encode_segwit_address("regtest", 0, b"\x11" * 20)
    monkeypatch.setattr(funding, "bitcoin_rpc", lambda **kwargs: _NoEstimate())
    parameters = make_parameters(lender_btc_pubkey=LENDER_KEY.xonly_pubkey.hex())
    ContractDeployment.objects.create(
        chain_id=settings.EVM_CHAIN_ID,
        loan_contract_address=evm_address(),
        ether_swap_address=evm_address(),
        block_number=1,
        block_hash=hex32(),
        parameters=parameters,
    )


def values(**overrides):
    return {
        "amount_wei": str(AMOUNT_WEI),
        "borrower_btc_pubkey": BORROWER_KEY.xonly_pubkey.hex(),
        "borrower_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        "borrower_payout_address": encode_segwit_address("regtest", 1, b"\x22" * 32),
        **overrides,
    }


@pytest.fixture
def borrower():
    return make_user(User.Role.BORROWER)


@pytest.fixture
def loan(borrower):
    data = values()
    data["amount_wei"] = int(data["amount_wei"])
    return loan_create(borrower=borrower, **data)


def _fragment(body: str, element_id: str) -> str:
    """The element with ``element_id`` (a <section>) as it stands in ``body``, outermost tags included."""
    start = body.index(f'<section id="{element_id}"')
    depth, position = 0, start
    for match in re.finditer(r"<(/?)section\b", body[start:]):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            position = start + match.end()
            break
    return body[start : body.index(">", position) + 1]


def _same_fragment(client, url, element_id):
    whole = client.get(url)
    partial = client.get(url, headers={"HX-Request": "true"})
    assert whole.status_code == partial.status_code == 200
    whole_body, partial_body = whole.content.decode(), partial.content.decode()
    assert "<html" in whole_body and "<html" not in partial_body
    # the csrf token differs per render: compare with it masked
    mask = re.compile(r'(value|data-csrf)="[A-Za-z0-9]{64}"')
    assert mask.sub("", partial_body.strip()) == mask.sub("", _fragment(whole_body, element_id))
    return whole_body


def test_my_loans_lists_only_the_borrowers_own_and_its_partial_is_the_same(client, borrower, loan):
    other = make_user(User.Role.BORROWER)
    others = loan_create(borrower=other, **{**values(), "amount_wei": AMOUNT_WEI})
    client.force_login(borrower)
    body = _same_fragment(client, reverse("pages:borrower-loans"), "loan-list")
    assert reverse("pages:borrower-loan", args=[loan.pk]) in body
    assert reverse("pages:borrower-loan", args=[others.pk]) not in body


def test_pages_need_a_signed_in_user(client, loan):
    for url in (reverse("pages:borrower-loans"), reverse("pages:borrower-loan", args=[loan.pk])):
        response = client.get(url)
        assert response.status_code == 302 and "login" in response["Location"]


def test_new_loan_shows_the_terms_and_every_deadline_and_htmx_gets_the_terms_partial(client, borrower):
    client.force_login(borrower)
    url = reverse("pages:borrower-loan-new")
    whole = client.get(url, {"amount_wei": AMOUNT_WEI})
    body = whole.content.decode()
    assert whole.status_code == 200
    loan_terms = _fragment(body, "loan-terms")
    # bond 10 %, interest floored over t_D: the same figures loan_create fixes
    repayment = AMOUNT_WEI + AMOUNT_WEI * 500 * 540_000 // (10_000 * 1_051_200)
    assert f"{AMOUNT_WEI // 10} wei" in loan_terms and f"{repayment} wei" in loan_terms
    assert f"{repayment - AMOUNT_WEI} wei" in loan_terms
    for name in ("t_B", "t_D", "t_L", "t_0", "t_1"):
        assert name in loan_terms
    partial = client.get(url, {"amount_wei": AMOUNT_WEI}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in partial and partial.strip() == loan_terms


def test_new_loan_post_creates_the_draft_through_loan_create(client, borrower):
    client.force_login(borrower)
    data = values()
    response = client.post(reverse("pages:borrower-loan-new"), data)
    loan = Loan.objects.get(borrower=borrower)
    assert response.status_code == 302 and response["Location"] == reverse("pages:borrower-loan", args=[loan.pk])
    assert loan.borrower_hash == data["borrower_hash"] and loan.amount_wei == AMOUNT_WEI


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"amount_wei": "1"}, "amount_out_of_bounds"),
        ({"amount_wei": "lots"}, "amount_out_of_bounds"),
        ({"borrower_btc_pubkey": "00" * 32}, "invalid_key"),
        ({"borrower_hash": "xyz"}, "invalid_hash"),
        ({"borrower_payout_address": "not-an-address"}, "invalid_payout_address"),
    ],
)
def test_a_refused_new_loan_shows_the_services_code_and_writes_nothing(client, borrower, overrides, code):
    client.force_login(borrower)
    response = client.post(reverse("pages:borrower-loan-new"), values(**overrides))
    assert response.status_code == 422
    body = response.content.decode()
    assert f'data-code="{code}"' in body and f"Refused ({code})" in body
    assert not Loan.objects.exists()


def test_a_lender_may_not_create_a_loan_and_is_told_why(client):
    lender = make_user(User.Role.LENDER)
    client.force_login(lender)
    response = client.post(reverse("pages:borrower-loan-new"), values())
    assert response.status_code == 403 and 'data-code="permission_denied"' in response.content.decode()
    assert not Loan.objects.exists()


def test_the_loan_page_shows_the_escrow_the_exact_amount_the_bip21_link_and_its_qr(client, borrower, loan):
    client.force_login(borrower)
    body = _same_fragment(client, reverse("pages:borrower-loan", args=[loan.pk]), "loan")
    instructions = funding.loan_funding_instructions(
        loan=loan, fee_rate_sat_vb=funding.fee_rate_bounds()[0], fee_rate_source="minimum"
    )
    assert instructions.escrow_address in body
    assert f"exactly {instructions.total_sats} sat" in body
    assert f'href="{instructions.bip21_uri}"' in body
    assert str(qr_svg(instructions.bip21_uri, title=f"Pay {instructions.total_sats} sat to the escrow")) in body
    assert "Fund the escrow" in body  # loan_next_actions' first step of a draft
    assert "<script>" not in body and "wallet.js" in body


def test_the_funding_status_partial_polls_and_is_the_loan_pages_same_fragment(client, borrower, loan):
    client.force_login(borrower)
    page_body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    url = reverse("pages:borrower-loan-funding", args=[loan.pk])
    partial = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert 'hx-trigger="every 15s"' in partial
    assert partial.strip() == _fragment(page_body, "funding-status")
    whole = client.get(url).content.decode()
    assert "<html" in whole and _fragment(whole, "funding-status") == partial.strip()
    assert "No payment to the escrow seen yet" in partial


def test_another_borrower_gets_404_everywhere(client, loan):
    client.force_login(make_user(User.Role.BORROWER))
    for url in (
        reverse("pages:borrower-loan", args=[loan.pk]),
        reverse("pages:borrower-loan-funding", args=[loan.pk]),
        reverse("pages:borrower-loan-psbt", args=[loan.pk, "exit"]),
    ):
        assert client.get(url).status_code == 404
    response = client.post(reverse("pages:borrower-loan-presignature", args=[loan.pk]), {"psbt": "cHNidP8="})
    assert response.status_code == 404
    assert not BorrowerSignature.objects.exists()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("pages:borrower-loan-presignature", {"psbt": "cHNidP8BAAoCAAAAAAAAAAAAAA=="}, None),
        ("pages:borrower-loan-ladders", {"release": "", "exit": ""}, "ladder_empty"),
        ("pages:borrower-loan-broadcast", {"transaction": "00"}, None),
    ],
)
def test_a_refused_upload_or_broadcast_shows_its_reason_and_stores_nothing(client, borrower, loan, name, data, code):
    client.force_login(borrower)
    before = Loan.objects.values().get(pk=loan.pk)
    response = client.post(reverse(name, args=[loan.pk]), data)
    body = response.content.decode()
    assert response.status_code == 422, body[:500]
    found = re.search(r'data-code="([a-z_]+)"', body)
    assert found is not None and (code is None or found.group(1) == code)
    assert "<html" in body and 'id="loan"' in body
    assert not BorrowerSignature.objects.exists()
    assert Loan.objects.values().get(pk=loan.pk) == before


def test_an_exit_psbt_before_the_escrow_is_confirmed_shows_the_refusal(client, borrower, loan):
    client.force_login(borrower)
    response = client.get(reverse("pages:borrower-loan-psbt", args=[loan.pk, "exit"]))
    assert response.status_code == 422 and 'data-code="escrow_not_confirmed"' in response.content.decode()
    assert client.get(reverse("pages:borrower-loan-psbt", args=[loan.pk, "other"])).status_code == 404


def test_the_wallet_script_is_served_and_reads_data_attributes():
    from pathlib import Path

    from django.contrib.staticfiles import finders

    text = Path(finders.find("loans/wallet.js")).read_text()
    assert "eth_sendTransaction" in text and "dataset.endpoint" in text and "dataset.report" in text


# ------------------------------------------------------------------------------------------------ the browser's key


def test_new_loan_page_asks_the_browser_for_the_keys_and_the_recovery_kit(client, borrower):
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan-new")).content.decode()
    new_loan = _fragment(body, "new-loan")
    assert "data-new-loan" in new_loan and "data-borrower-keys" in new_loan
    assert re.search(r"<section[^>]*data-recovery-kit hidden", new_loan)  # shown by borrower.js only
    assert re.search(r'<button type="submit" data-needs-kit>', new_loan)  # usable without JavaScript
    assert '<script type="module" src="/static/loans/borrower.js"></script>' in body
    # Only the public values have a field: no private key or pB ever goes through this form.
    assert set(re.findall(r'name="([a-z_]+)"', new_loan)) == {
        "csrfmiddlewaretoken",
        "amount_wei",
        "borrower_btc_pubkey",
        "borrower_hash",
        "borrower_payout_address",
    }


def _ready_to_presign(loan):
    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.REQUESTED,
        contract_loan_id=1,
        lender_hash=hex32(),
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
        escrow_txid=hex32(),
        escrow_vout=0,
        escrow_sats=1_200_000,
    )
    loan.refresh_from_db()
    return loan


def test_the_presign_step_gives_the_browser_signer_its_endpoints_and_a_fee_rate(client, borrower, loan):
    loan = _ready_to_presign(loan)
    client.force_login(borrower)
    body = _same_fragment(client, reverse("pages:borrower-loan", args=[loan.pk]), "loan")
    assert f'data-borrower-xb="{loan.borrower_btc_pubkey}"' in body
    assert f'data-loan-file-url="{reverse("api:loan-file", args=[loan.pk])}"' in body
    step = body[body.index('id="step-presignature"') :]
    assert re.search(r"<div[^>]*data-presign hidden", step)
    assert f'data-presignature-url="{reverse("api:loan-presignature", args=[loan.pk])}"' in step
    assert f'data-ladders-url="{reverse("api:loan-ladders", args=[loan.pk])}"' in step
    assert re.search(r'id="presign-fee-rate" data-fee-rate inputmode="decimal" value="1"', step)  # the minimum
    assert 'name="psbt"' in step  # the pasted PSBT still works without JavaScript
    assert "data-ladders " not in body


def test_once_tx1_is_stored_the_ladders_step_names_its_txid(client, borrower, loan):
    loan = _ready_to_presign(loan)
    txid = hex32()
    BorrowerSignature.objects.create(
        loan=loan,
        kind=BorrowerSignature.Kind.TX_1,
        form=BorrowerSignature.Form.RAW,
        signature_hex="ab" * 64,
        txid=txid,
        sighash_hex=hex32(),
        unsigned_tx_hex="00",
        uploaded_by=borrower,
    )
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    step = body[body.index('id="step-ladders"') :]
    assert re.search(rf'<div[^>]*data-ladders hidden[^>]*data-tx1-txid="{txid}"', step)
    assert "data-presign " not in body


def test_the_borrower_script_is_a_module_of_the_vendored_signer():
    from pathlib import Path

    from django.contrib.staticfiles import finders

    text = Path(finders.find("loans/borrower.js")).read_text()
    assert "from './vendor/signer.js'" in text and finders.find("loans/vendor/signer.js")
    for name in ("newBorrowerSecrets", "buildTx1", "checkLoanTransaction", "signPsbt", "buildLadders"):
        assert name in text


# ------------------------------------------------------------------------------------------------ release and exits


def _step(body: str, name: str) -> str:
    """The loan page's step section ``name`` (it holds no nested section)."""
    start = body.index(f'id="step-{name}"')
    return body[start : body.index("</section>", start)]


def _watchtower_state(loan):
    from loans.models import Alert, Automation, BitcoinBroadcast

    loan.refresh_from_db()
    return (
        loan.status,
        loan.bitcoin_status,
        loan.updated_at,
        list(BitcoinBroadcast.objects.filter(loan=loan).values_list("kind", "txid", "attempts")),
        list(Automation.objects.filter(loan=loan).values_list("action", "state", "attempts")),
        Alert.objects.filter(loan=loan).count(),
    )


def _refused(client, url, loan, code, status=422):
    before = _watchtower_state(loan)
    response = client.post(url)
    body = response.content.decode()
    assert response.status_code == status, body[:500]
    assert f'data-code="{code}"' in body and 'id="loan"' in body
    assert _watchtower_state(loan) == before
    return body


@pytest.fixture
def node_down(settings):
    from .test_bitcoin_actions import CLOSED_PORT_URL

    settings.BITCOIN_RPC_URL = CLOSED_PORT_URL
    settings.LOAN_VAULT_KEYS_FILE = ""


def _released(borrower, *, rung: bool = True):
    from loans.services.bitcoin_actions import presigned_ladder_upload

    from .test_bitcoin_actions import release_rung, released_loan

    loan, tx1_txid = released_loan(borrower)  # repaid, pL public, TX_1 applied at height 200
    rows = presigned_ladder_upload(loan=loan, actor=borrower, release=[release_rung(loan, tx1_txid)]) if rung else []
    return loan, rows


def test_the_release_step_says_the_watchtower_will_do_it_and_offers_it_now(client, borrower, node_down):
    loan, _rows = _released(borrower)
    client.force_login(borrower)
    body = _same_fragment(client, reverse("pages:borrower-loan", args=[loan.pk]), "loan")
    step = _step(body, "release-psbt")
    assert "The watchtower will broadcast your pre-signed TX_release (1 rung)" in step
    assert f'action="{reverse("pages:borrower-loan-release", args=[loan.pk])}"' in step
    assert "Release the collateral now" in step


def test_only_the_loans_borrower_may_release_now(client, borrower, node_down):
    loan, _ = _released(borrower)
    url = reverse("pages:borrower-loan-release", args=[loan.pk])
    before = _watchtower_state(loan)
    response = client.post(url)
    assert response.status_code == 302 and "login" in response["Location"]
    client.force_login(make_user(User.Role.BORROWER))
    assert client.post(url).status_code == 404  # a loan the caller may not see
    for role in (User.Role.LENDER, User.Role.OPERATOR):
        client.force_login(make_user(role))
        body = _refused(client, url, loan, "permission_denied", status=403)
        assert "only the loan&#x27;s borrower may release the collateral" in body
    assert _watchtower_state(loan) == before


def test_release_now_refusals_change_nothing(client, borrower, loan, node_down):
    client.force_login(borrower)
    _refused(client, reverse("pages:borrower-loan-release", args=[loan.pk]), loan, "wrong_state")  # a draft
    released, _ = _released(borrower, rung=False)
    body = _refused(client, reverse("pages:borrower-loan-release", args=[released.pk]), released, "no_presigned_rungs")
    assert "You left no pre-signed TX_release" in body


def test_release_now_with_the_node_down_keeps_the_transaction_for_the_watchtower(client, borrower, node_down):
    from loans.models import Automation, BitcoinBroadcast

    loan, (rung,) = _released(borrower)
    client.force_login(borrower)
    response = client.post(reverse("pages:borrower-loan-release", args=[loan.pk]))
    body = response.content.decode()
    assert response.status_code == 422 and 'data-code="broadcast_failed"' in body
    row = BitcoinBroadcast.objects.get(loan=loan)
    assert (row.kind, row.txid, row.accepted_at, row.requested_by) == ("tx_release", rung.txid, None, None)
    assert Automation.objects.get(loan=loan, action="release").state == "pending"
    pending = re.search(r'<li data-spend-pending="tx_release">.*?</li>', body, re.S).group(0)
    assert rung.txid in pending and "not taken by the node yet" in pending


def test_reclaim_the_escrow_waits_for_t0_then_hands_the_rung_to_the_watchtower(client, borrower, node_down):
    from loans.models import BitcoinBroadcast
    from loans.services.bitcoin_actions import presigned_ladder_upload

    from .test_bitcoin_actions import cancelled_loan_with_escrow_at, exit_tx, follow

    loan = cancelled_loan_with_escrow_at(borrower, 500)  # t_0 = 100: a block at 600 may hold TX_exit
    (rung,) = presigned_ladder_upload(loan=loan, actor=borrower, exit=[exit_tx(loan).hex()])
    url = reverse("pages:borrower-loan-exit", args=[loan.pk])
    follow(598)
    client.force_login(borrower)
    step = _step(client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode(), "exit-psbt")
    assert "Opens at Bitcoin block 600: 1 block to go" in step and "Not open yet." in step
    assert "Reclaim the escrow now" not in step
    assert "the watchtower then broadcasts your pre-signed TX_exit" in step
    body = _refused(client, url, loan, "too_early")
    assert "it opens at Bitcoin height 600 (1 block(s) to go)" in body
    client.force_login(make_user(User.Role.LENDER))
    _refused(client, url, loan, "permission_denied", status=403)

    follow(599)
    client.force_login(borrower)
    step = _step(client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode(), "exit-psbt")
    assert "The watchtower will broadcast your pre-signed TX_exit (1 rung)" in step
    assert "Reclaim the escrow now" in step
    response = client.post(url)
    assert response.status_code == 422 and 'data-code="broadcast_failed"' in response.content.decode()
    row = BitcoinBroadcast.objects.get(loan=loan)
    assert (row.kind, row.txid, row.accepted_at) == ("tx_exit", rung.txid, None)


def test_no_exit_for_an_escrow_the_contract_may_still_take(client, borrower, node_down):
    from .test_bitcoin_actions import cancelled_loan_with_escrow_at, follow, set_loan

    loan = cancelled_loan_with_escrow_at(borrower, 500)
    set_loan(loan, status=Loan.Status.ACTIVE)
    follow(700)
    client.force_login(borrower)
    _refused(client, reverse("pages:borrower-loan-exit", args=[loan.pk]), loan, "wrong_state")


def test_the_repay_step_shows_the_amount_due(client, borrower, loan):
    Loan.objects.filter(pk=loan.pk).update(status=Loan.Status.ACTIVE, contract_loan_id=1)
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    step = _step(body, "repay")
    assert f"Amount due: <strong>{loan.repayment_wei} wei</strong>" in step
    assert "Repay the loan with your wallet" in step


def test_the_wallet_exits_say_what_happens_next(client, borrower, loan):
    from .test_bitcoin_actions import follow

    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.REQUESTED,
        contract_loan_id=1,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
        escrow_txid=hex32(),
        escrow_vout=0,
        escrow_sats=1_200_000,
        escrow_btc_height=500,
    )
    follow(510)
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    cancel = _step(body, "cancel-request")
    assert f"once t_0 matures (Bitcoin height {500 + loan.escrow_timelock_btc_blocks})" in cancel
    assert "Cancel the request with your wallet" in cancel
    Loan.objects.filter(pk=loan.pk).update(status=Loan.Status.REPAYMENT_IN_PROGRESS)
    body = client.get(reverse("pages:borrower-loan", args=[loan.pk])).content.decode()
    withdraw = _step(body, "withdraw-repayment")
    assert f"({loan.repayment_wei} + {loan.bond_wei} wei)" in withdraw and "Not open yet." in withdraw


def test_an_exit_step_without_a_tx_exit_rung_offers_the_browser_signer_and_takes_exit_rungs_alone(
    client, borrower, node_down
):
    from loans.services.bitcoin_actions import presigned_ladder_upload

    from .test_bitcoin_actions import cancelled_loan_with_escrow_at, exit_tx, follow, set_loan

    # A request that never got hL (so never reached the pre-sign step): no TX_1, no ladder.
    loan = set_loan(cancelled_loan_with_escrow_at(borrower, 500), lender_hash=None)
    client.force_login(borrower)
    url = reverse("pages:borrower-loan", args=[loan.pk])
    for height, phrase in ((550, "Not open yet."), (599, "You left no pre-signed TX_exit")):
        follow(height)
        step = _step(_same_fragment(client, url, "loan"), "exit-psbt")
        assert phrase in step
        assert re.search(r"<div[^>]*data-exit-signer hidden", step)  # shown by borrower.js when it holds the key
        assert f'data-ladders-url="{reverse("api:loan-ladders", args=[loan.pk])}"' in step
        assert 'data-default-rate="1"' in step  # the node has no estimate: the desk's minimum
    # The ladders service takes TX_exit rungs with no TX_1 and no TX_release.
    (rung,) = presigned_ladder_upload(loan=loan, actor=borrower, exit=[exit_tx(loan).hex()])
    assert rung.kind == BorrowerSignature.Kind.TX_EXIT and rung.verified_at is not None
    step = _step(client.get(url).content.decode(), "exit-psbt")
    assert "data-exit-signer" not in step and "Reclaim the escrow now" in step


def test_every_amount_is_shown_in_rbtc_and_btc_beside_the_integer(client, borrower, loan):
    from loans.models import BitcoinTransaction

    from .test_bitcoin_actions import follow

    client.force_login(borrower)
    url = reverse("pages:borrower-loan", args=[loan.pk])
    body = _same_fragment(client, url, "loan")
    assert f"{AMOUNT_WEI} wei (0.01 rBTC)" in body
    assert f"<dd>{loan.repayment_wei} wei ({rbtc(loan.repayment_wei)})</dd>" in body
    assert f"<dd>{loan.bond_wei} wei (0.001 rBTC)</dd>" in body  # the 10 % bond
    instructions = funding.loan_funding_instructions(
        loan=loan, fee_rate_sat_vb=funding.fee_rate_bounds()[0], fee_rate_source="minimum"
    )
    total = instructions.total_sats
    assert f"exactly {total} sat</strong> ({btc(total)})" in body
    assert f"<dd>{total} sat ({btc(total)}): collateral {instructions.collateral_sats} (0.01 BTC)," in body
    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.REQUESTED,
        contract_loan_id=1,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
        escrow_txid=hex32(),
        escrow_vout=0,
        escrow_sats=1_200_000,
        escrow_btc_height=500,
        collateral_sats=1_000_000,
        origination_fee_sats=10_000,
    )
    loan.refresh_from_db()
    BitcoinTransaction.objects.create(
        loan=loan,
        role=BitcoinTransaction.Role.ESCROW_FUNDING,
        txid=loan.escrow_txid,
        vout=0,
        value_sats=1_200_000,
        block_hash=hex32(),
        block_height=500,
    )
    follow(502)
    body = client.get(url).content.decode()
    assert "1000000 sat (0.01 BTC) (origination fee 10000 sat (0.0001 BTC))" in body
    assert "1200000 sat: 3 confirmations (1200000 sat is 0.012 BTC)" in body
    Loan.objects.filter(pk=loan.pk).update(status=Loan.Status.ACTIVE)
    step = _step(client.get(url).content.decode(), "repay")
    assert f"Amount due: <strong>{loan.repayment_wei} wei</strong> ({rbtc(loan.repayment_wei)})" in step
    assert f"the loan {AMOUNT_WEI} wei (0.01 rBTC) and its interest" in step
    body = client.get(reverse("pages:borrower-loans")).content.decode()
    assert "<td>0.01 rBTC</td>" in body


def test_the_new_loan_terms_show_rbtc_beside_wei(client, borrower):
    client.force_login(borrower)
    body = client.get(reverse("pages:borrower-loan-new"), {"amount_wei": AMOUNT_WEI}).content.decode()
    terms = _fragment(body, "loan-terms")
    assert f"<dd>{AMOUNT_WEI} wei (0.01 rBTC)</dd>" in terms
    assert f"<dd>{AMOUNT_WEI // 10} wei (0.001 rBTC; 10 %)</dd>" in terms


def test_unknown_chain_heights_are_said_in_words(client, borrower, loan):
    from loans.models import ChainCursor

    from .test_bitcoin_actions import follow

    client.force_login(borrower)
    url = reverse("pages:borrower-loan", args=[loan.pk])
    body = _same_fragment(client, url, "loan")
    assert "?" not in _fragment(body, "loan").split('class="deadlines"')[1].split("</section>")[0]
    assert (
        "Seen from EVM block unknown (the desk has not read the EVM chain yet: its watcher has not run, or the EVM "
        "node is not answering) and Bitcoin height unknown (the desk has not read the Bitcoin chain yet: its watcher "
        "has not run, or the Bitcoin node is not answering)."
    ) in body
    assert "data-chain-down" not in body
    # The Bitcoin watcher followed block 0 once (a height, even 0, is printed), then its node stopped answering.
    follow(0)
    ChainCursor.objects.filter(chain=ChainCursor.Chain.BITCOIN).update(failures=3, last_error="ConnectionError")
    body = client.get(url).content.decode()
    assert "and Bitcoin height 0." in body and "Seen from EVM block unknown (" in body
    assert (
        '<p class="chain-down" role="status" data-chain-down="Bitcoin">The Bitcoin node is not answering: the '
        "watcher's last 3 reads of it failed, so what this page shows of the Bitcoin chain may be out of "
        "date.</p>"
    ) in body
    assert 'data-chain-down="EVM"' not in body


def test_a_closed_loans_page_says_when_it_closed_instead_of_running_deadlines(client, borrower, loan):
    from loans.models import LoanStatusChange
    from loans.services import loan_status_transition

    from .test_bitcoin_actions import follow

    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.CANCELLED,
        contract_loan_id=1,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
        escrow_txid=hex32(),
        escrow_vout=0,
        escrow_sats=1_200_000,
        escrow_btc_height=500,
    )
    follow(510)
    client.force_login(borrower)
    url = reverse("pages:borrower-loan", args=[loan.pk])
    open_page = _fragment(client.get(url).content.decode(), "loan")
    deadlines = open_page.split('class="deadlines"')[1].split("</section>")[0]
    assert "Escrow exit (t_0) matures: Bitcoin block 600" in deadlines and "closed" not in deadlines
    assert 'class="broadcast"' in open_page and "data-kit-import" in open_page  # TX_exit may still be sent
    # TX_exit final: the escrow is back, both chains settled, the loan closed by that transition.
    closed = loan_status_transition(loan_id=loan.pk, to_status="exited", cause="test: TX_exit final", side="bitcoin")
    change = LoanStatusChange.objects.filter(loan=loan).latest("created_at")
    assert closed.closed_at is not None and change.to_status == "exited"
    body = _same_fragment(client, url, "loan")
    deadlines = body.split('class="deadlines"')[1].split("</section>")[0]
    assert "matures" not in deadlines and "<li>" not in deadlines and "No deadline is running yet" not in deadlines
    assert (
        f'<p class="loan-closed" data-closed-at="{closed.closed_at.isoformat()}">This loan is closed: Cancelled, '
        f"Escrow reclaimed (TX_exit), since {closed.closed_at:%Y-%m-%d %H:%M} UTC. Its deadlines no longer run.</p>"
    ) in deadlines
    assert abs((change.created_at - closed.closed_at).total_seconds()) < 1  # the closing transition's time
    # Nothing is left to sign or broadcast: no kit to load, no broadcast form.
    assert 'class="broadcast"' not in body and "data-kit-import" not in body


def test_the_funding_box_agrees_with_the_loan_row_when_the_watcher_recorded_no_escrow_transaction(
    client, borrower, loan
):
    from .test_bitcoin_actions import follow

    client.force_login(borrower)
    funding_url = reverse("pages:borrower-loan-funding", args=[loan.pk])
    assert "No payment to the escrow seen yet" in client.get(funding_url).content.decode()  # a draft, nothing paid
    txid = hex32()
    # Set up without the watcher: the loan row says the escrow confirmed, no BitcoinTransaction row exists.
    Loan.objects.filter(pk=loan.pk).update(
        status=Loan.Status.REQUESTED,
        contract_loan_id=1,
        bitcoin_status=Loan.BitcoinStatus.ESCROW_CONFIRMED,
        escrow_txid=txid,
        escrow_vout=1,
        escrow_sats=1_200_000,
        escrow_btc_height=500,
    )
    follow(504)
    body = _same_fragment(client, reverse("pages:borrower-loan", args=[loan.pk]), "loan")
    box = _fragment(body, "funding-status")
    assert "No payment to the escrow seen yet" not in box
    assert (
        f"<li data-escrow-of-record>Escrow: <code>{txid}:1</code>, 1200000 sat (0.012 BTC): confirmed, as the loan "
        "records it (Bitcoin height 500, 5 confirmations); the watcher recorded no transaction for it.</li>"
    ) in box
    assert "Status</dt><dd>Requested; Bitcoin: Escrow confirmed" in body  # the status line says the same
    polled = client.get(funding_url, headers={"HX-Request": "true"}).content.decode()
    assert polled.strip() == box


def test_the_loan_page_has_a_labelled_kit_file_input_that_only_the_browser_reads(client, borrower, loan):
    client.force_login(borrower)
    body = _same_fragment(client, reverse("pages:borrower-loan", args=[loan.pk]), "loan")
    panel = body[body.index("data-browser-key") : body.index("data-key-status")]
    assert re.search(r"<div data-kit-import hidden>", panel)  # shown by borrower.js when it holds no key
    assert '<label for="kit-file">Load your recovery kit into this browser' in panel
    assert '<input id="kit-file" type="file" accept="application/json,.json" data-kit-file>' in panel
    assert "<form" not in panel and "name=" not in panel.split("data-kit-import")[1]  # nothing posts the file
