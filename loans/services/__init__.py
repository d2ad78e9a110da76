"""Every write to the loan desk's data. Views, the REST API, admin actions and worker tasks all call these.

Each service takes keyword-only arguments, checks who may act, validates before it writes, writes inside one
transaction and only after commit tells the outside world (channels broadcast, queued work). A refusal raises a
``loans.errors.LoanServiceError`` with a stable ``code`` and changes nothing. Each action's module lists its codes
(``*_CODES``); the API documents them all (docs/api-errors.md).

- ``transitions``: the private primitive every status change goes through (both sides, audit row, closing)
- ``evm_facts``: one service per contract event, applied once when final
- ``bitcoin_facts``: one service per Bitcoin spend path, applied once when final
- ``borrower_actions``: the borrower's draft (``loan_create``)
- ``presignatures``: the borrower's TX_1 pre-signature, verified in full (``presignature_upload``)
- ``evm_calls``: every contract call of both parties, checked against the chain and prepared for a wallet, or
  sent with the lender's server key (the lender's calls); wallet-reported transactions
- ``bitcoin_actions``: the borrower's TX_release/TX_exit ladders and PSBTs, broadcasts, the lender's TX_1 and
  TX_capture with the server's key, the operators' broadcast retry
- ``lender_secrets``: pL and the lender's keys, sealed in the vault
- ``operators``: the lender role, pausing new loans, pruning expired records (audited)
- ``automation``: the lender's unattended duties (server keys; at most once per loan and action)
- ``watchtower``: the borrower's pre-signed TX_release and TX_exit, broadcast for a borrower who went offline
- ``alerts``, ``deadline_alerts``: one message per person and occasion, before each deadline and to operators
- ``accounts``, ``idempotency``: sign-in, API tokens, Idempotency-Key records
- ``parameters``, ``deployments``: protocol parameter versions and contract deployments
"""

from ..errors import ChainFactError, DeepReorgError, LoanServiceError, TransitionError
from .alerts import alert_create, alert_mark_read
from .automation import automation_run
from .bitcoin_actions import (
    bitcoin_broadcast_retry,
    bitcoin_transaction_broadcast,
    collateral_capture,
    collateral_lock,
    exit_psbt_prepare,
    presigned_ladder_upload,
    release_psbt_prepare,
)
from .bitcoin_facts import bitcoin_block_disconnect, bitcoin_transaction_apply, bitcoin_transaction_record
from .borrower_actions import loan_create
from .deadline_alerts import deadline_alerts_run
from .deployments import contract_deployment_record
from .evm_calls import (
    evm_transaction_report,
    lender_hash_commit,
    loan_default_mark,
    loan_offer_accept_prepare,
    loan_offer_extend,
    loan_offer_withdraw,
    loan_repayment_accept,
    loan_repayment_prepare,
    loan_repayment_withdraw_prepare,
    loan_request_cancel_prepare,
    loan_request_prepare,
)
from .evm_facts import evm_event_apply
from .lender_secrets import lender_hash_commit_prepare
from .operators import expired_records_prune, lender_role_grant, lender_role_revoke, new_loans_pause, new_loans_resume
from .parameters import protocol_parameters_create, protocol_parameters_matching
from .presignatures import presignature_upload
from .transitions import loan_group_name, loan_status_transition
from .watchtower import watchtower_run

__all__ = [
    "ChainFactError",
    "DeepReorgError",
    "LoanServiceError",
    "TransitionError",
    "alert_create",
    "alert_mark_read",
    "automation_run",
    "bitcoin_block_disconnect",
    "bitcoin_broadcast_retry",
    "bitcoin_transaction_apply",
    "bitcoin_transaction_broadcast",
    "bitcoin_transaction_record",
    "collateral_capture",
    "collateral_lock",
    "contract_deployment_record",
    "deadline_alerts_run",
    "evm_event_apply",
    "evm_transaction_report",
    "exit_psbt_prepare",
    "expired_records_prune",
    "lender_hash_commit",
    "lender_hash_commit_prepare",
    "lender_role_grant",
    "lender_role_revoke",
    "loan_create",
    "loan_default_mark",
    "loan_group_name",
    "loan_offer_accept_prepare",
    "loan_offer_extend",
    "loan_offer_withdraw",
    "loan_repayment_accept",
    "loan_repayment_prepare",
    "loan_repayment_withdraw_prepare",
    "loan_request_cancel_prepare",
    "loan_request_prepare",
    "loan_status_transition",
    "new_loans_pause",
    "new_loans_resume",
    "presignature_upload",
    "presigned_ladder_upload",
    "protocol_parameters_create",
    "protocol_parameters_matching",
    "release_psbt_prepare",
    "watchtower_run",
]
