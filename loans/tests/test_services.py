"""Status transitions: explicit, locked, audited; a refused one changes nothing."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from evm.deploy import Deployment
from evm.parameters import ProtocolParameters as OnChainParameters
from loans import services
from loans.models import ContractDeployment, Loan, LoanStatusChange, ProtocolParameters

from .factories import DEFAULT_PARAMETERS, make_loan

pytestmark = pytest.mark.django_db
PARAMETERS = {**DEFAULT_PARAMETERS, "lender_btc_pubkey": "ef" * 32}


def test_a_transition_writes_status_fields_and_one_audit_row(lender):
    loan = make_loan(status=Loan.Status.REQUESTED)
    services.loan_status_transition(
        loan_id=loan.pk, to_status=Loan.Status.OFFERED, cause="LoanOffered", actor=lender,
        changes={"offered_evm_block": 1234, "lender": lender},
    )  # fmt: skip
    loan.refresh_from_db()
    assert (loan.status, loan.offered_evm_block, loan.lender) == ("offered", 1234, lender)
    assert loan.offer_deadline_evm_block == 1234 + loan.offer_window_blocks
    change = LoanStatusChange.objects.get(loan=loan)
    assert (change.from_status, change.to_status, change.actor, change.cause) == (
        "requested", "offered", lender, "LoanOffered",
    )  # fmt: skip


def test_the_whole_happy_path_leaves_one_row_per_step():
    loan = make_loan()
    path = ["requested", "offered", "active", "repayment_in_progress", "repaid"]
    for status in path:
        services.loan_status_transition(loan_id=loan.pk, to_status=status, cause=f"to {status}")
    rows = list(LoanStatusChange.objects.filter(loan=loan).values_list("from_status", "to_status"))
    assert rows == list(zip(["draft", *path[:-1]], path, strict=True))


@pytest.mark.parametrize(
    "start, target",
    [("draft", "active"), ("requested", "repaid"), ("offered", "cancelled"), ("repaid", "active"),
     ("defaulted", "repayment_in_progress"), ("active", "active")],
)  # fmt: skip
def test_a_refused_transition_changes_nothing(start, target):
    loan = make_loan(status=start, offered_evm_block=7)
    with pytest.raises(services.TransitionError, match=f"is {start}; it cannot become {target}"):
        services.loan_status_transition(
            loan_id=loan.pk, to_status=target, cause="bad", changes={"offered_evm_block": 99}
        )
    loan.refresh_from_db()
    assert (loan.status, loan.offered_evm_block) == (start, 7)
    assert not LoanStatusChange.objects.filter(loan=loan).exists()


def test_unknown_status_and_empty_cause_are_refused():
    loan = make_loan()
    with pytest.raises(services.TransitionError, match="unknown contract status"):
        services.loan_status_transition(loan_id=loan.pk, to_status="lost", cause="x")
    with pytest.raises(services.TransitionError, match="needs a cause"):
        services.loan_status_transition(loan_id=loan.pk, to_status="requested", cause="  ")


def test_terminal_statuses_have_no_way_out():
    for status in Loan.TERMINAL_STATUSES:
        assert status not in Loan.ALLOWED_TRANSITIONS


def test_parameters_get_consecutive_versions_and_only_from_staff(operator, borrower):
    first = services.protocol_parameters_create(actor=operator, **PARAMETERS)
    second = services.protocol_parameters_create(actor=operator, **{**PARAMETERS, "interest_bps": 700})
    assert second.version == first.version + 1
    with pytest.raises(PermissionDenied):
        services.protocol_parameters_create(actor=borrower, **PARAMETERS)
    with pytest.raises(ValidationError):
        services.protocol_parameters_create(actor=operator, **{**PARAMETERS, "offer_window_blocks": 10**6})
    assert ProtocolParameters.objects.count() == 2


def test_a_new_parameter_version_leaves_existing_loans_alone(operator):
    loan = make_loan()
    services.protocol_parameters_create(actor=operator, **{**PARAMETERS, "loan_duration_blocks": 100_000})
    loan.refresh_from_db()
    assert loan.loan_duration_blocks == DEFAULT_PARAMETERS["loan_duration_blocks"]


def deployment(**overrides) -> Deployment:
    values = {
        "chain_id": 31337,
        "ether_swap_address": "0x" + "34" * 20,
        "loan_address": "0x" + "12" * 20,
        "deployer": "0x" + "56" * 20,
        "block_number": 5,
        "block_hash": bytes.fromhex("ab" * 32),
        "ether_swap_tx_hash": bytes(32),
        "loan_tx_hash": bytes(32),
        "link_tx_hash": bytes(32),
        "parameters": OnChainParameters(lender_btc_pubkey=bytes.fromhex("cd" * 32)),
        **overrides,
    }
    return Deployment(**values)


def test_deployment_record_is_idempotent_and_refuses_a_conflict():
    first = services.contract_deployment_record(deployment=deployment())
    assert services.contract_deployment_record(deployment=deployment()) == first
    assert (first.block_hash, first.block_number) == ("ab" * 32, 5)
    with pytest.raises(ValidationError, match="different deployment"):
        services.contract_deployment_record(deployment=deployment(block_number=6))
    assert ContractDeployment.objects.count() == 1


def test_deployment_record_stores_the_deployed_parameters_once():
    first = services.contract_deployment_record(deployment=deployment())
    parameters = first.parameters
    assert parameters.lender_btc_pubkey == "cd" * 32
    assert {name: getattr(parameters, name) for name in DEFAULT_PARAMETERS} == DEFAULT_PARAMETERS
    second = services.contract_deployment_record(deployment=deployment(loan_address="0x" + "78" * 20))
    assert second.parameters == parameters  # same values: no new version
    changed = OnChainParameters(lender_btc_pubkey=bytes.fromhex("cd" * 32), interest_bps=900)
    third = services.contract_deployment_record(
        deployment=deployment(loan_address="0x" + "9a" * 20, parameters=changed)
    )
    assert (third.parameters.version, third.parameters.interest_bps) == (parameters.version + 1, 900)


def test_a_transition_is_broadcast_to_the_loan_group_only_after_commit(settings, django_capture_on_commit_callbacks):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    layer = get_channel_layer()
    loan = make_loan()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(services.loan_group_name(loan.pk), channel)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.loan_status_transition(loan_id=loan.pk, to_status="requested", cause="LoanRequested")
    assert len(callbacks) == 1  # nothing sent while the transaction is open
    callbacks[0]()
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "loan.status", "loan_id": loan.pk, "side": "contract", "status": "requested"}


def test_a_refused_transition_broadcasts_nothing(django_capture_on_commit_callbacks):
    loan = make_loan()
    with django_capture_on_commit_callbacks(execute=False) as callbacks, pytest.raises(services.TransitionError):
        services.loan_status_transition(loan_id=loan.pk, to_status="repaid", cause="bad")
    assert callbacks == []
