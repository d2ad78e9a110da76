"""``manage.py demo``: drive the development stack by hand, so a newcomer walks a loan through in the browser in
minutes. Development only (DJANGO_DEBUG=1, EVM_CHAIN_ID=31337, regtest), like ``devstack``.

- ``demo setup``: the demo lender (anvil's account 0, the contracts' owner) with its EVM key and the development
  lender's Bitcoin key (``VAR_DIR/dev-lender.key``) sealed in the vault, the deployment's automation on, and the
  lender's payout address (``LENDER_BTC_PAYOUT_ADDRESS``, else the BIP-86 address of the development lender's key,
  which ``devstack`` puts in its children's environment). Idempotent; ``devstack`` runs it at start.
- ``demo windows``: the development contracts' windows shortened to a few dozen blocks (``DEMO_WINDOWS``: t_B 30,
  t_D 40, t_L 20 EVM blocks; t_0 30, t_1 40 Bitcoin blocks), sent by their owner and recorded as the parameters in
  force, so every way out is reached by mining in seconds. New loans take them; ``devstack`` runs it at start.
- ``demo fund ADDRESS [--wei N]``: N more wei (default 100 rBTC) for an EVM address on anvil (``anvil_setBalance``).
- ``demo pay-escrow LOAN_ID``: the exact sats the loan page asks for, to the loan's escrow address, from the
  regtest node's faucet (``sendtoaddress``), then one block.
- ``demo advance LOAN_ID``: mine both chains up to the loan's next deadline (the first block at which one of its
  steps opens or closes), exactly: on the deadline's own chain to it, on the other the same time at the loan's
  ``evm_blocks_per_btc_block`` (rounded down; at most ``IN_STEP_MAX_EVM_BLOCKS`` EVM blocks).
- ``demo mine [--evm N] [--btc N]``: mine N blocks (default one on each chain).

Each prints what it did; bad input is a ``CommandError`` ending in a stable code in parentheses (``unknown_loan``,
``no_deadline_ahead``, ``escrow_not_due``, ...) and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.views.decorators.debug import sensitive_variables
from eth_utils import is_address, to_checksum_address
from web3 import Web3
from web3.exceptions import Web3Exception

from bitcoin.errors import BitcoinProtocolError
from bitcoin.keys import PrivateKey
from bitcoin.rpc import BitcoinRPC, BitcoinRPCError, sats_to_btc
from evm.connection import connect
from evm.deploy import dev_accounts
from evm.errors import EvmError
from loans import chains, selectors, vault
from loans.errors import LoanServiceError
from loans.facts import loan_facts
from loans.funding import current_fee_rate_sat_vb, loan_funding_instructions
from loans.models import BitcoinTransaction, ContractDeployment, Loan, User
from loans.services.demo import (
    DEMO_WINDOWS,
    demo_lender_setup,
    demo_payout_address,
    demo_windows_shorten,
    is_development,
)

DEFAULT_FUND_WEI = 100 * 10**18  # 100 rBTC
WEI_PER_RBTC = 10**18
#: Bitcoin blocks per generatetoaddress call (the embedded node takes at most 10,000).
BTC_MINE_CHUNK = 1000
#: EVM blocks per anvil_mine call, and how long one call may take: anvil mines more slowly as its chain grows
#: (measured: 1,000 blocks in 1 s on a new chain, in 17 s past block 6,000 on a loaded machine).
EVM_MINE_CHUNK = 1000
EVM_MINE_TIMEOUT_SECONDS = 600
#: ``advance`` moves the other chain in step, but at most this many EVM blocks (the default t_0 of 100 Bitcoin
#: blocks is 2,000 EVM blocks; t_1's 30,000 would be 600,000, hours on anvil).
IN_STEP_MAX_EVM_BLOCKS = 2000
#: Upper bounds of one ``demo mine``, so a typo does not wedge the nodes.
MAX_EVM_BLOCKS = 10_000_000
MAX_BTC_BLOCKS = 100_000
DEV_LENDER_KEY_FILE = "dev-lender.key"

#: What each step's deadline is called, by (step, "opens" | "closes").
DEADLINE_NAMES = {
    ("accept-offer", "closes"): "the accept cutoff",
    ("withdraw-offer", "opens"): "the offer deadline (t_B)",
    ("repay", "closes"): "the repayment deadline (t_D)",
    ("mark-default", "opens"): "the repayment deadline (t_D)",
    ("accept-repayment", "closes"): "the acceptance deadline (t_L)",
    ("withdraw-repayment", "opens"): "the acceptance deadline (t_L)",
    ("exit-psbt", "opens"): "the escrow's timelock (t_0)",
    ("collateral-capture", "opens"): "the collateral's timelock (t_1)",
}


def refuse(code: str, message: str) -> CommandError:
    """A refusal: the message, then its stable code in parentheses (as the services' codes)."""
    return CommandError(f"{message} ({code})")


@sensitive_variables("text")
def dev_lender_bitcoin_key() -> vault.Secret:
    """The development lender's Bitcoin key (``VAR_DIR/dev-lender.key``, written by ``devstack`` when it deploys)."""
    path = Path(settings.VAR_DIR) / DEV_LENDER_KEY_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise refuse(
            "no_dev_lender_key", f"no development lender key at {path}: run manage.py devstack (it makes one)"
        ) from None
    try:
        return vault.Secret(PrivateKey.from_hex(text).secret)
    except (BitcoinProtocolError, ValueError):
        raise refuse("no_dev_lender_key", f"{path} does not hold a Bitcoin private key (64 hex characters)") from None


def dev_lender_payout_address() -> str:
    """The BIP-86 address of the development lender's key: the payout address when none is configured."""
    xonly = PrivateKey(dev_lender_bitcoin_key().reveal()).xonly_pubkey
    return demo_payout_address(xonly_pubkey=xonly, network=settings.BITCOIN_NETWORK)


@dataclass(frozen=True)
class Target:
    """A deadline of a loan on one chain: the blocks to mine so that the next block is the deadline's first."""

    chain: str  # "evm" or "bitcoin"
    block: int  # the deadline's block (EVM) or the first height a block may hold the spend (Bitcoin)
    blocks: int  # to mine on that chain to reach it
    steps: tuple[str, ...]  # "mark-default opens", ...
    name: str


def loan_targets(loan: Loan, *, evm_head: int, btc_tip: int) -> list[Target]:
    """The loan's deadlines still ahead, from the nodes' heads (every step of both parties, as the pages show
    them): an EVM deadline at block D is reached when the head is D - 1 (the next block may act); a Bitcoin
    timelock maturing at height M when the tip is M - 1 (the next block may hold the spend)."""
    deadlines = selectors.loan_deadlines(loan=loan, head=evm_head)
    timelocks = selectors.loan_timelocks(loan=loan, tip_height=btc_tip)
    lender_view = User(role=User.Role.LENDER, is_active=True)
    actions = []
    for user in (loan.borrower, lender_view):
        actions += selectors.loan_next_actions(loan=loan, user=user, deadlines=deadlines, timelocks=timelocks)
    found: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for action in actions:
        for moment, verb in ((action.opens, "opens"), (action.closes, "closes")):
            if isinstance(moment, selectors.Deadline) and moment.block is not None and moment.blocks_remaining:
                found.setdefault(("evm", moment.block), []).append((action.name, verb))
            elif isinstance(moment, selectors.TimelockPath) and moment.mature_height and moment.blocks_remaining:
                found.setdefault(("bitcoin", moment.mature_height), []).append((action.name, verb))
    targets = []
    for (chain, block), steps in found.items():
        head = evm_head if chain == "evm" else btc_tip
        names = sorted({DEADLINE_NAMES.get(step, f"{step[0]} {step[1]}") for step in steps})
        steps_text = tuple(f"{name} {verb}" for name, verb in dict.fromkeys(steps))
        targets.append(Target(chain, block, block - 1 - head, steps_text, " / ".join(names)))
    return targets


def evm_equivalent(target: Target, rate: int) -> int:
    return target.blocks if target.chain == "evm" else target.blocks * rate


def blocks_text(count: int, chain: str) -> str:
    return f"{count} {'EVM' if chain == 'evm' else 'Bitcoin'} block{'' if count == 1 else 's'}"


class Command(BaseCommand):
    help = "Development only: the demo lender, rBTC for a wallet, an escrow paid, chains mined to a loan's deadline."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", required=True, metavar="subcommand")
        commands.add_parser("setup", help="the demo lender, its keys in the vault, automation on, the payout address")
        commands.add_parser("windows", help="shorten the development contracts' windows to a few dozen blocks")
        fund = commands.add_parser("fund", help="give an EVM address rBTC on anvil")
        fund.add_argument("address", help="0x... EVM address")
        fund.add_argument("--wei", type=int, default=DEFAULT_FUND_WEI, help=f"wei to add (default {DEFAULT_FUND_WEI})")
        pay = commands.add_parser("pay-escrow", help="pay a loan's escrow from the regtest faucet and mine a block")
        pay.add_argument("loan_id", type=int)
        advance = commands.add_parser("advance", help="mine both chains up to a loan's next deadline")
        advance.add_argument("loan_id", type=int)
        mine = commands.add_parser("mine", help="mine blocks (default: one on each chain)")
        mine.add_argument("--evm", type=int, default=None, help="EVM blocks")
        mine.add_argument("--btc", type=int, default=None, help="Bitcoin blocks")

    def handle(self, *args: Any, subcommand: str, **options: Any) -> None:
        if not is_development():
            raise refuse("not_development", "demo is for development: DJANGO_DEBUG=1, EVM_CHAIN_ID=31337, regtest")
        handler = getattr(self, "handle_" + subcommand.replace("-", "_"))
        try:
            handler(**options)
        except LoanServiceError as error:
            raise refuse(error.code, str(error)) from None
        except BitcoinRPCError as error:
            raise refuse("node_unavailable", f"the Bitcoin node at {settings.BITCOIN_RPC_URL}: {error}") from None
        except (EvmError, Web3Exception, OSError) as error:
            raise refuse("node_unavailable", f"the EVM node at {settings.EVM_RPC_URL}: {error}") from None

    # -------------------------------------------------------------------------------------------- nodes

    @staticmethod
    def w3() -> Web3:
        """The EVM node, with room for a long ``anvil_mine``."""
        return connect(settings.EVM_RPC_URL, expected_chain_id=settings.EVM_CHAIN_ID, timeout=EVM_MINE_TIMEOUT_SECONDS)

    @staticmethod
    def btc() -> BitcoinRPC:
        rpc = chains.bitcoin_rpc()
        chain = rpc.getblockchaininfo().get("chain")
        if chain != "regtest":
            raise refuse(
                "not_development", f"the Bitcoin node at {settings.BITCOIN_RPC_URL} is on {chain}, not regtest"
            )
        return rpc

    @staticmethod
    def anvil(w3: Web3, method: str, params: list) -> Any:
        response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if response.get("error"):
            raise refuse("node_unavailable", f"{method} failed: {response['error']}")
        return response.get("result")

    def mine_evm(self, w3: Web3, blocks: int) -> int:
        remaining = blocks
        while remaining:
            chunk = min(remaining, EVM_MINE_CHUNK)
            self.anvil(w3, "anvil_mine", [hex(chunk)])
            remaining -= chunk
        return int(w3.eth.block_number)

    @staticmethod
    def mine_btc(rpc: BitcoinRPC, blocks: int) -> int:
        address = str(rpc.call("getnewaddress"))  # the faucet's: its coinbases pay for `pay-escrow`
        remaining = blocks
        while remaining:
            chunk = min(remaining, BTC_MINE_CHUNK)
            rpc.generatetoaddress(chunk, address)
            remaining -= chunk
        return rpc.getblockcount()

    @staticmethod
    def loan(loan_id: int) -> Loan:
        loan = Loan.objects.select_related("borrower").filter(pk=loan_id).first()
        if loan is None:
            raise refuse("unknown_loan", f"no loan {loan_id}")
        return loan

    # -------------------------------------------------------------------------------------------- subcommands

    @staticmethod
    def deployment() -> ContractDeployment:
        deployment = (
            ContractDeployment.objects.filter(chain_id=settings.EVM_CHAIN_ID).order_by("-created_at", "-id").first()
        )
        if deployment is None:
            raise refuse(
                "no_deployment", f"no contract deployment recorded on chain {settings.EVM_CHAIN_ID}: run devstack"
            )
        return deployment

    def handle_windows(self, **options: Any) -> None:
        owner = dev_accounts(1)[0]
        parameters, changed = demo_windows_shorten(
            deployment=self.deployment(), owner_key=vault.Secret(bytes(owner.key))
        )
        windows = ", ".join(f"{name} {value}" for name, value in DEMO_WINDOWS.items())
        self.stdout.write(
            f"demo windows {'put' if changed else 'already'} in force (parameters version {parameters.version}): "
            f"{windows}; loans made before keep theirs"
        )

    def handle_setup(self, **options: Any) -> None:
        deployment = self.deployment()
        owner = dev_accounts(1)[0]
        demo = demo_lender_setup(
            deployment=deployment, evm_key=vault.Secret(bytes(owner.key)), bitcoin_key=dev_lender_bitcoin_key()
        )
        switches = "offer, accept repayments, withdraw offers, mark defaults, capture"
        self.stdout.write(
            f"demo lender {demo.user.username} ({demo.user.evm_address}, anvil account 0) "
            f"{'created' if demo.created else 'in place'}: EVM and Bitcoin keys (xL {demo.bitcoin_key.public_id}) "
            f"sealed in the vault; automation on for {deployment.loan_contract_address} ({switches})"
        )
        if settings.LENDER_BTC_PAYOUT_ADDRESS:
            self.stdout.write(f"lender payout address {settings.LENDER_BTC_PAYOUT_ADDRESS} (LENDER_BTC_PAYOUT_ADDRESS)")
        else:
            self.stdout.write(
                f"lender payout address {dev_lender_payout_address()} (BIP-86 of the development lender's key; "
                "devstack sets LENDER_BTC_PAYOUT_ADDRESS to it for the web app and the worker)"
            )

    def handle_fund(self, *, address: str, wei: int, **options: Any) -> None:
        if not is_address(address):
            raise refuse("invalid_address", f"{address!r} is not an EVM address (0x and 40 hex characters)")
        if wei <= 0 or wei > 10**30:
            raise refuse("invalid_amount", f"--wei must be between 1 and 10**30, got {wei}")
        address = to_checksum_address(address)
        w3 = self.w3()
        balance = int(w3.eth.get_balance(address)) + wei
        self.anvil(w3, "anvil_setBalance", [address, hex(balance)])
        self.stdout.write(
            f"gave {address} {wei} wei ({Decimal(wei) / WEI_PER_RBTC} rBTC) on anvil: it holds {balance} wei "
            f"({Decimal(balance) / WEI_PER_RBTC} rBTC)"
        )

    def handle_pay_escrow(self, *, loan_id: int, **options: Any) -> None:
        loan = self.loan(loan_id)
        if loan.is_closed or loan.bitcoin_status != Loan.BitcoinStatus.NONE:
            raise refuse(
                "escrow_not_due",
                f"loan {loan.pk} is not waiting for its escrow (status {loan.status}, bitcoin {loan.bitcoin_status}"
                f"{', closed' if loan.is_closed else ''})",
            )
        seen = loan.bitcoin_transactions.filter(role=BitcoinTransaction.Role.ESCROW_FUNDING).first()
        if seen is not None:
            raise refuse(
                "escrow_already_paid", f"loan {loan.pk}'s escrow is already paid by {seen.txid}: wait for the watcher"
            )
        rpc = self.btc()
        rate, source = current_fee_rate_sat_vb(rpc=rpc)
        instructions = loan_funding_instructions(loan=loan, fee_rate_sat_vb=rate, fee_rate_source=source)
        held = rpc.scan_script_utxos(loan_facts(loan=loan).escrow.script_pubkey.hex())
        if held:
            paid = ", ".join(f"{utxo['txid']}:{utxo['vout']} ({utxo['sats']} sat)" for utxo in held)
            raise refuse(
                "escrow_already_paid", f"loan {loan.pk}'s escrow {instructions.escrow_address} already holds {paid}"
            )
        txid = str(rpc.call("sendtoaddress", instructions.escrow_address, sats_to_btc(instructions.total_sats)))
        height = self.mine_btc(rpc, 1)
        self.stdout.write(
            f"paid {instructions.total_sats} sat to loan {loan.pk}'s escrow {instructions.escrow_address} from the "
            f"regtest faucet in {txid}, mined in block {height} (the watcher confirms it within seconds)"
        )

    def handle_advance(self, *, loan_id: int, **options: Any) -> None:
        loan = self.loan(loan_id)
        w3, rpc = self.w3(), self.btc()
        evm_head, btc_tip = int(w3.eth.block_number), rpc.getblockcount()
        targets = loan_targets(loan, evm_head=evm_head, btc_tip=btc_tip)
        if not targets:
            raise refuse(
                "no_deadline_ahead",
                f"loan {loan.pk} ({loan.status}, bitcoin {loan.bitcoin_status}{', closed' if loan.is_closed else ''})"
                " has no deadline ahead",
            )
        rate = loan.evm_blocks_per_btc_block
        target = min(targets, key=lambda t: (evm_equivalent(t, rate), t.chain != "evm"))
        if target.chain == "evm":
            evm_blocks, btc_blocks = target.blocks, target.blocks // rate
        else:
            evm_blocks, btc_blocks = min(target.blocks * rate, IN_STEP_MAX_EVM_BLOCKS), target.blocks
        evm_head = self.mine_evm(w3, evm_blocks)
        btc_tip = self.mine_btc(rpc, btc_blocks)
        where = "EVM block" if target.chain == "evm" else "Bitcoin height"
        capped = target.chain == "bitcoin" and evm_blocks < target.blocks * rate
        self.stdout.write(
            f"mined {blocks_text(evm_blocks, 'evm')} (head {evm_head}) and {blocks_text(btc_blocks, 'bitcoin')} "
            f"(tip {btc_tip}){f' (the EVM chain in step, at most {IN_STEP_MAX_EVM_BLOCKS} blocks)' if capped else ''}"
        )
        self.stdout.write(
            f"loan {loan.pk} reached {target.name} at {where} {target.block}: {', '.join(target.steps)} "
            "with the next block"
        )

    def handle_mine(self, *, evm: int | None, btc: int | None, **options: Any) -> None:
        if evm is None and btc is None:
            evm = btc = 1
        evm, btc = evm or 0, btc or 0
        if not 0 <= evm <= MAX_EVM_BLOCKS or not 0 <= btc <= MAX_BTC_BLOCKS or evm + btc == 0:
            raise refuse(
                "invalid_blocks",
                f"mine 0..{MAX_EVM_BLOCKS} EVM blocks and 0..{MAX_BTC_BLOCKS} Bitcoin blocks, not none",
            )
        w3, rpc = self.w3(), self.btc()
        evm_head = self.mine_evm(w3, evm)
        btc_tip = self.mine_btc(rpc, btc)
        self.stdout.write(
            f"mined {blocks_text(evm, 'evm')} (head {evm_head}) and {blocks_text(btc, 'bitcoin')} (tip {btc_tip})"
        )
