"""The lender's check of a loan's escrow on the Bitcoin node, before committing hL and before offering (a read).

PROTOCOL.md step 5: the lender offers only against an escrow that is confirmed, unspent, pays the loan's own escrow
script (``loans.facts.loan_facts``) exactly ``loan.escrow_sats``, and whose timelock leaf t_0 is still far enough
from maturing that the borrower cannot take the loan and reclaim the escrow (``escrow_has_room_for_offer``).

``escrow_check`` asks the node (``gettxout`` without the mempool, so an unconfirmed escrow is not found) and
returns an ``EscrowCheck`` whose ``problems`` are stable codes (``ESCROW_PROBLEMS``), empty when the escrow is good
for an offer. It writes nothing. ``lender_queue_requests`` is the lender's list of requested loans, paged by the
page and the API, and ``lender_queue_checks`` checks the escrows of one page of it (never the whole queue: each
check is 3-4 calls to the node).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from bitcoin.errors import BitcoinProtocolError
from bitcoin.rpc import BitcoinRPC, NodeUnavailableError, RPCError, btc_to_sats

from .chains import bitcoin_rpc
from .facts import loan_facts
from .models import ContractDeployment, Loan, User
from .permissions import is_lender, is_operator, require
from .selectors import TimelockPath, bitcoin_confirmations

# Stable codes; a service refusing on one of them raises it as its LoanServiceError code.
ESCROW_PROBLEMS: tuple[str, ...] = (
    "escrow_not_recorded",  # the loan names no escrow outpoint yet (the Bitcoin watcher has not seen it)
    "escrow_not_found",  # the node knows no such output in a block
    "escrow_unconfirmed",  # the escrow transaction is only in the mempool
    "escrow_spent",  # the output was spent in a block (TX_exit, or TX_1 already)
    "escrow_spend_pending",  # a transaction in the mempool spends it
    "escrow_script_mismatch",  # it pays another script than the loan's escrow output
    "escrow_value_mismatch",  # it holds another value than loan.escrow_sats
    "escrow_no_room",  # t_0 is too close to maturing for an offer (PROTOCOL.md step 5)
    "invalid_loan_terms",  # the loan's facts make no escrow script (no payout address, ...)
    "bitcoin_node_unavailable",  # the node could not be asked
)
# What a hash commit does not need (hL may be committed however close t_0 is; the offer is what must wait).
ROOM_PROBLEMS: tuple[str, ...] = ("escrow_no_room",)


@dataclass(frozen=True)
class EscrowCheck:
    """What the Bitcoin node says about a loan's escrow output, seen from ``tip_height``."""

    loan_id: int
    txid: str | None
    vout: int | None
    expected_sats: int | None
    tip_height: int | None
    found: bool = False
    unspent: bool = False
    script_matches: bool = False
    value_sats: int | None = None
    value_matches: bool = False
    confirmations: int = 0
    output_height: int | None = None
    exit_mature_height: int | None = None
    blocks_until_exit: int | None = None  # blocks to be mined before B's TX_exit (t_0) may be; 0: the next one
    min_btc_blocks_left_for_offer: int | None = None
    has_room_for_offer: bool = False
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Good for an offer."""
        return not self.problems

    def problems_except(self, *ignored: str) -> tuple[str, ...]:
        return tuple(problem for problem in self.problems if problem not in ignored)


def _on_chain_parameters(loan: Loan):
    from .services.borrower_actions import on_chain_parameters  # the loan holds a snapshot of every field

    return on_chain_parameters(loan)  # type: ignore[arg-type]


def escrow_check(*, loan: Loan, rpc: BitcoinRPC | None = None, tip_height: int | None = None) -> EscrowCheck:
    """Check ``loan``'s escrow on the node. ``tip_height`` (default: the node's tip when read) is where
    confirmations and the timelock are counted from."""
    base = {
        "loan_id": loan.pk,
        "txid": loan.escrow_txid,
        "vout": loan.escrow_vout,
        "expected_sats": loan.escrow_sats,
        "min_btc_blocks_left_for_offer": _on_chain_parameters(loan).offer_escrow_min_btc_blocks_left(),
    }
    if loan.escrow_txid is None or loan.escrow_vout is None or loan.escrow_sats is None:
        return EscrowCheck(**base, tip_height=tip_height, problems=("escrow_not_recorded",))
    try:
        expected_script = loan_facts(loan=loan).escrow.script_pubkey
    except BitcoinProtocolError:
        return EscrowCheck(**base, tip_height=tip_height, problems=("invalid_loan_terms",))
    rpc = rpc or bitcoin_rpc()
    try:
        return _check(loan, rpc, tip_height, expected_script, base)
    except (NodeUnavailableError, RPCError):
        return EscrowCheck(**base, tip_height=tip_height, problems=("bitcoin_node_unavailable",))


def _check(loan: Loan, rpc: BitcoinRPC, tip_height: int | None, expected_script: bytes, base: dict) -> EscrowCheck:
    txid, vout = loan.escrow_txid, loan.escrow_vout
    output = rpc.gettxout(txid, vout, False)
    if output is None:
        problem = _missing(rpc, loan)
        return EscrowCheck(**base, tip_height=tip_height, found=problem == "escrow_spent", problems=(problem,))
    best_height = int(rpc.getblockheader(output["bestblock"])["height"])
    node_confirmations = int(output["confirmations"])
    output_height = best_height - node_confirmations + 1
    tip = best_height if tip_height is None else tip_height
    confirmations = bitcoin_confirmations(block_height=output_height, tip_height=tip)
    value_sats = btc_to_sats(output["value"])
    script_matches = bytes.fromhex(output["scriptPubKey"]["hex"]) == expected_script
    parameters = _on_chain_parameters(loan)
    exit_path = TimelockPath.of(
        output_height=output_height, timelock_blocks=loan.escrow_timelock_btc_blocks, tip_height=tip
    )
    room = parameters.escrow_has_room_for_offer(confirmations)
    problems = []
    if rpc.gettxout(txid, vout, True) is None:
        problems.append("escrow_spend_pending")
    if not script_matches:
        problems.append("escrow_script_mismatch")
    if value_sats != loan.escrow_sats:
        problems.append("escrow_value_mismatch")
    if not room:
        problems.append("escrow_no_room")
    return EscrowCheck(
        **base,
        tip_height=tip,
        found=True,
        unspent=True,
        script_matches=script_matches,
        value_sats=value_sats,
        value_matches=value_sats == loan.escrow_sats,
        confirmations=confirmations,
        output_height=output_height,
        exit_mature_height=exit_path.mature_height,
        blocks_until_exit=exit_path.blocks_remaining,
        has_room_for_offer=room,
        problems=tuple(problems),
    )


def _missing(rpc: BitcoinRPC, loan: Loan) -> str:
    """Why ``gettxout`` (mempool excluded) has no such output: only in the mempool, spent, or unknown."""
    if rpc.gettxout(loan.escrow_txid, loan.escrow_vout, True) is not None:
        return "escrow_unconfirmed"
    try:
        if loan.escrow_btc_height is not None:
            block_hash = rpc.getblockhash(loan.escrow_btc_height)
            tx = rpc.getrawtransaction(loan.escrow_txid, True, block_hash)
        else:
            tx = rpc.getrawtransaction(loan.escrow_txid, True)  # the mempool, or a node with -txindex
    except RPCError:
        return "escrow_not_found"
    if not tx.get("blockhash"):
        return "escrow_unconfirmed"  # in the mempool (its output already spent by another mempool transaction)
    outputs = tx.get("vout", [])
    if loan.escrow_vout >= len(outputs):
        return "escrow_not_found"
    return "escrow_spent"


def lender_queue_requests(*, actor: User) -> QuerySet[Loan]:
    """The lender's queue: the requested loans of the newest deployment on the desk's chain, oldest first (a
    query to page through; ``lender_queue_checks`` checks a page's escrows). Lenders and operators only."""
    require(is_lender(actor) or is_operator(actor), "only the lender or an operator sees the lender's queue")
    deployment = (
        ContractDeployment.objects.filter(chain_id=settings.EVM_CHAIN_ID).order_by("-created_at", "-id").first()
    )
    if deployment is None:
        return Loan.objects.none()
    return (
        Loan.objects.filter(deployment=deployment, status=Loan.Status.REQUESTED)
        .select_related("borrower", "parameters", "deployment")
        .order_by("created_at", "id")
    )


def lender_queue_checks(*, loans: Sequence[Loan], rpc: BitcoinRPC | None = None) -> list[tuple[Loan, EscrowCheck]]:
    """Each of ``loans`` (a page of the queue: the node is asked 3-4 times per loan) with its escrow check, one
    node and one tip for all."""
    if not loans:
        return []
    rpc = rpc or bitcoin_rpc()
    try:
        tip = rpc.getblockcount()
    except (NodeUnavailableError, RPCError):
        tip = None
    return [(loan, escrow_check(loan=loan, rpc=rpc, tip_height=tip)) for loan in loans]


__all__ = [
    "ESCROW_PROBLEMS",
    "ROOM_PROBLEMS",
    "EscrowCheck",
    "escrow_check",
    "lender_queue_checks",
    "lender_queue_requests",
]
