"""Every write to the loan desk's data. Views, the REST API, admin actions and worker tasks all call these.

Each service takes keyword-only arguments, checks who may act, validates before it writes, writes inside one
transaction and only after commit tells the outside world (channels broadcast, queued work). A refusal raises a
``loans.errors.LoanServiceError`` with a stable ``code`` and changes nothing.

- ``transitions``: the private primitive every status change goes through (both sides, audit row, closing)
- ``evm_facts``: one service per contract event, applied once when final
- ``bitcoin_facts``: one service per Bitcoin spend path, applied once when final
- ``borrower_actions``: the borrower's actions (``loan_create``)
- ``parameters``, ``deployments``: protocol parameter versions and contract deployments
"""

from ..errors import ChainFactError, DeepReorgError, LoanServiceError, TransitionError
from .bitcoin_facts import bitcoin_block_disconnect, bitcoin_transaction_apply, bitcoin_transaction_record
from .borrower_actions import loan_create
from .deployments import contract_deployment_record
from .evm_facts import evm_event_apply
from .lender_secrets import lender_hash_commit_prepare
from .parameters import protocol_parameters_create, protocol_parameters_matching
from .presignatures import presignature_upload
from .transitions import loan_group_name, loan_status_transition

__all__ = [
    "ChainFactError",
    "DeepReorgError",
    "LoanServiceError",
    "TransitionError",
    "bitcoin_block_disconnect",
    "bitcoin_transaction_apply",
    "bitcoin_transaction_record",
    "contract_deployment_record",
    "evm_event_apply",
    "lender_hash_commit_prepare",
    "loan_create",
    "loan_group_name",
    "loan_status_transition",
    "presignature_upload",
    "protocol_parameters_create",
    "protocol_parameters_matching",
]
