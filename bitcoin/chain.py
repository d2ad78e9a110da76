"""Reading the Bitcoin chain for the watchers: typed blocks, cursor references, and which loan transaction a
spend is.

Everything here scales to mainnet: a block is read with ``getblockhash`` / ``getblock`` (verbosity 2) and a cursor
is checked with ``getblockhash`` / ``getblockheader``; nothing scans the UTXO set. Amounts go through
``bitcoin.rpc.btc_to_sats`` (exact integers). Hashes and txids are display-order hex, as ``OutPoint`` and
``BitcoinRPC`` take them.

A watcher follows the chain from a stored ``BlockRef`` (height, hash, parent hash): ``first_reorged_block`` names
the lowest stored block the node no longer has on its active chain (rewind to before it), ``confirmed_height``
the newest height deep enough to act on, and ``get_block`` reads each block once.

``classify_loan_spend`` recognises the four loan transactions by the witness alone (the leaf, a control block
that commits to the loan's output, the stack's shape and the preimage), so a spend the platform did not build
(the borrower's own wallet, another fee) is recognised too, and anything else is ``None``: a watcher never raises
on someone else's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bitcoin.encoding import sha256
from bitcoin.errors import BitcoinProtocolError
from bitcoin.rpc import RPC_INVALID_PARAMETER, BitcoinRPC, RPCError, btc_to_sats
from bitcoin.scripts import HASHLOCK_LEAF, TIMELOCK_LEAF, TwoLeafTaprootOutput, control_block_commits
from bitcoin.transactions import OutPoint, SpendKind

#: BIP-341: a last witness item starting with 0x50 (with at least two items) is the annex, not part of the stack.
ANNEX_TAG = 0x50
#: OP_SHA256 followed by a 32-byte push: how every hashlock leaf commits to its hash.
_OP_SHA256_PUSH32 = b"\xa8\x20"
#: BIP-340 signatures in a tapscript witness: 64 bytes (SIGHASH_DEFAULT) or 65 (explicit sighash type).
_SIGNATURE_SIZES = (64, 65)
_PREIMAGE_SIZE = 32


class ChainDataError(BitcoinProtocolError):
    """The node's answer does not have the shape Bitcoin Core gives it (a field is missing or malformed)."""


# -- blocks -----------------------------------------------------------------------------------------------------


class BlockTxInput(NamedTuple):
    """An input of a block transaction: the output it spends and its witness items."""

    outpoint: OutPoint
    witness: tuple[bytes, ...]


class BlockTxOutput(NamedTuple):
    """An output of a block transaction."""

    value_sats: int
    script_pubkey: bytes


@dataclass(frozen=True)
class BlockTx:
    """A transaction as a block carries it. A coinbase spends nothing: its ``inputs`` are empty."""

    txid: str
    inputs: tuple[BlockTxInput, ...]
    outputs: tuple[BlockTxOutput, ...]
    is_coinbase: bool = False

    def outpoint(self, vout: int) -> OutPoint:
        """The outpoint of output ``vout`` (what a later transaction spends)."""
        if not 0 <= vout < len(self.outputs):
            raise IndexError(f"{self.txid} has no output {vout}")
        return OutPoint(self.txid, vout)

    def input_spending(self, outpoint: OutPoint) -> int | None:
        """The index of the input spending ``outpoint``, or None."""
        return next((index for index, txin in enumerate(self.inputs) if txin.outpoint == outpoint), None)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlockTx:
        """From a transaction of ``getblock`` verbosity 2 (or verbose ``getrawtransaction``), parsed with Decimal."""
        try:
            txid = _hash_hex(data["txid"], "txid")
            coinbase = any("coinbase" in item for item in data["vin"])
            inputs = () if coinbase else tuple(_input(item) for item in data["vin"])
            outputs = tuple(_output(item, n) for n, item in enumerate(data["vout"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainDataError(f"malformed transaction in the node's answer: {exc!r}") from None
        return cls(txid=txid, inputs=inputs, outputs=outputs, is_coinbase=coinbase)


def _input(item: Mapping[str, Any]) -> BlockTxInput:
    witness = tuple(bytes.fromhex(w) for w in item.get("txinwitness", ()))
    return BlockTxInput(OutPoint(_hash_hex(item["txid"], "input txid"), int(item["vout"])), witness)


def _output(item: Mapping[str, Any], position: int) -> BlockTxOutput:
    if int(item["n"]) != position:
        raise ValueError(f"output {item['n']} listed at position {position}")
    return BlockTxOutput(btc_to_sats(item["value"]), bytes.fromhex(item["scriptPubKey"]["hex"]))


def _hash_hex(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) != 64:
        raise ValueError(f"{name} must be 64 hex characters, got {value!r}")
    bytes.fromhex(value)
    return value.lower()


@dataclass(frozen=True)
class BlockRef:
    """What a watcher stores as its cursor; a reorg shows as a stored hash the active chain no longer has at
    that height. ``previous_hash`` is None only for the genesis block."""

    height: int
    hash: str
    previous_hash: str | None


@dataclass(frozen=True)
class Block:
    """A block with its transactions, coinbase first."""

    height: int
    hash: str
    previous_hash: str | None
    txs: tuple[BlockTx, ...]

    @property
    def ref(self) -> BlockRef:
        return BlockRef(self.height, self.hash, self.previous_hash)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Block:
        """From ``getblock`` verbosity 2 (parsed with Decimal, as ``BitcoinRPC`` does)."""
        try:
            height, block_hash = int(data["height"]), _hash_hex(data["hash"], "block hash")
            previous = data.get("previousblockhash")
            previous_hash = None if previous is None else _hash_hex(previous, "previous block hash")
            txs = data["tx"]
            if not txs or not all(isinstance(tx, Mapping) for tx in txs):
                raise ValueError("getblock must be called with verbosity 2 (decoded transactions)")
        except (KeyError, TypeError, ValueError) as exc:
            raise ChainDataError(f"malformed block in the node's answer: {exc!r}") from None
        if (previous_hash is None) != (height == 0):
            raise ChainDataError(f"block {block_hash} at height {height} and its previous hash disagree")
        return cls(height, block_hash, previous_hash, tuple(BlockTx.from_json(tx) for tx in txs))

    def spends(self, outpoints: Iterable[OutPoint]) -> Iterator[tuple[BlockTx, int]]:
        """(transaction, input index) for every input of this block spending one of ``outpoints``."""
        wanted = set(outpoints)
        for tx in self.txs:
            for index, txin in enumerate(tx.inputs):
                if txin.outpoint in wanted:
                    yield tx, index

    def outputs_to(self, script_pubkeys: Iterable[bytes]) -> Iterator[tuple[BlockTx, int]]:
        """(transaction, vout) for every output of this block paying one of ``script_pubkeys``."""
        wanted = set(script_pubkeys)
        for tx in self.txs:
            for vout, txout in enumerate(tx.outputs):
                if txout.script_pubkey in wanted:
                    yield tx, vout


def get_block(rpc: BitcoinRPC, height_or_hash: int | str) -> Block:
    """The active-chain block at a height, or the block with a hash (which may be on a stale branch).

    By height, the block is the one ``getblockhash`` named: if a reorg lands between the two calls it may already
    be stale, which the watcher sees as a ``previous_hash`` that does not match its cursor."""
    if isinstance(height_or_hash, int) and not isinstance(height_or_hash, bool):
        block_hash = rpc.getblockhash(height_or_hash)
    elif isinstance(height_or_hash, str):
        block_hash = height_or_hash
    else:
        raise TypeError("a block is named by its height (int) or its hash (hex str)")
    data = rpc.getblock(block_hash, 2)
    if not isinstance(data, Mapping):
        raise ChainDataError(f"getblock {block_hash} 2 did not answer a block object")
    block = Block.from_json(data)
    if block.hash != block_hash.lower():
        raise ChainDataError(f"asked for block {block_hash}, the node answered {block.hash}")
    if isinstance(height_or_hash, int) and block.height != height_or_hash:
        raise ChainDataError(f"asked for height {height_or_hash}, the node answered {block.height}")
    return block


def get_block_ref(rpc: BitcoinRPC, height_or_hash: int | str | None = None) -> BlockRef:
    """A cursor reference from the block header: the tip when ``height_or_hash`` is None."""
    if height_or_hash is None:
        block_hash = rpc.getbestblockhash()
    elif isinstance(height_or_hash, int) and not isinstance(height_or_hash, bool):
        block_hash = rpc.getblockhash(height_or_hash)
    elif isinstance(height_or_hash, str):
        block_hash = height_or_hash
    else:
        raise TypeError("a block is named by its height (int) or its hash (hex str)")
    header = rpc.getblockheader(block_hash)
    if not isinstance(header, Mapping):
        raise ChainDataError(f"getblockheader {block_hash} did not answer a header object")
    try:
        previous = header.get("previousblockhash")
        return BlockRef(
            int(header["height"]),
            _hash_hex(header["hash"], "block hash"),
            None if previous is None else _hash_hex(previous, "previous block hash"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainDataError(f"malformed block header in the node's answer: {exc!r}") from None


def confirmed_height(rpc: BitcoinRPC, confirmations: int) -> int | None:
    """The newest height with at least ``confirmations`` confirmations (the tip has 1), or None when the chain
    is not that long yet. Only facts up to this height are final."""
    if isinstance(confirmations, bool) or not isinstance(confirmations, int) or confirmations < 1:
        raise ValueError(f"confirmations must be a positive integer, got {confirmations!r}")
    height = rpc.getblockcount() - confirmations + 1
    return height if height >= 0 else None


def first_reorged_block(rpc: BitcoinRPC, stored: Iterable[BlockRef]) -> BlockRef | None:
    """The lowest stored block the active chain no longer has at its height (rewind to before it), or None
    when every stored block is still on the active chain."""
    for ref in sorted(stored, key=lambda r: r.height):
        try:
            current = rpc.getblockhash(ref.height)
        except RPCError as exc:
            if exc.code == RPC_INVALID_PARAMETER:  # "Block height out of range": the chain is shorter now
                return ref
            raise
        if current != ref.hash:
            return ref
    return None


# -- loan spends ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoanSpend:
    """A recognised loan transaction input: which one, the leaf it spends, and the preimage it reveals
    (pB for TX_1, pL for TX_release, None for the timelock spends)."""

    kind: SpendKind
    leaf_index: int
    preimage: bytes | None


# (output role, leaf index) -> (kind, signatures on the stack, preimage on the stack)
_ESCROW_LEAVES = {HASHLOCK_LEAF: (SpendKind.TX_1, 2, True), TIMELOCK_LEAF: (SpendKind.TX_EXIT, 1, False)}
_COLLATERAL_LEAVES = {HASHLOCK_LEAF: (SpendKind.TX_RELEASE, 1, True), TIMELOCK_LEAF: (SpendKind.TX_CAPTURE, 1, False)}


def parse_loan_spend(
    *, witness: Sequence[bytes], escrow: TwoLeafTaprootOutput, collateral: TwoLeafTaprootOutput | None
) -> LoanSpend | None:
    """Which loan transaction an input with ``witness`` is, from the witness alone, or None.

    The leaf script must be one of the output's leaves and the control block must commit to the output
    (BIP-341), the stack must have the leaf's shape (TX_1: sigB, sigL, pB; TX_exit: sigB; TX_release: sigB, pL;
    TX_capture: sigL) and a preimage must hash (SHA-256) to the hash in the leaf. ``collateral`` is None while
    the lender's hash is unknown (then only escrow spends are recognised). Signatures are not verified: that
    needs the spent outputs, and a confirmed spend passed consensus anyway.
    """
    if not isinstance(witness, Sequence) or isinstance(witness, bytes | str):
        return None
    items = list(witness)
    if not all(isinstance(item, bytes) for item in items):
        return None
    if len(items) >= 2 and items[-1][:1] == bytes([ANNEX_TAG]):
        items.pop()
    if len(items) < 2:
        return None
    *stack, leaf, control = items
    for output, leaves in ((escrow, _ESCROW_LEAVES), (collateral, _COLLATERAL_LEAVES)):
        if output is None or leaf not in output.leaves:
            continue
        leaf_index = output.leaves.index(leaf)
        if not control_block_commits(control, leaf, output.script_pubkey):
            continue
        kind, signatures, has_preimage = leaves[leaf_index]
        if len(stack) != signatures + has_preimage:
            continue
        if not all(len(signature) in _SIGNATURE_SIZES for signature in stack[:signatures]):
            continue
        preimage = stack[signatures] if has_preimage else None
        if preimage is not None and not _unlocks(preimage, leaf):
            continue
        return LoanSpend(kind, leaf_index, preimage)
    return None


def classify_loan_spend(
    *, witness: Sequence[bytes], escrow: TwoLeafTaprootOutput, collateral: TwoLeafTaprootOutput | None
) -> SpendKind | None:
    """``SpendKind.TX_1`` / ``TX_EXIT`` (escrow hashlock / timelock leaf), ``TX_RELEASE`` / ``TX_CAPTURE``
    (collateral hashlock / timelock leaf), or None for anything else (see ``parse_loan_spend``)."""
    spend = parse_loan_spend(witness=witness, escrow=escrow, collateral=collateral)
    return None if spend is None else spend.kind


def _unlocks(preimage: bytes, leaf: bytes) -> bool:
    """The preimage is 32 bytes (the leaf checks OP_SIZE) and its SHA-256 is the hash the leaf pushes."""
    return len(preimage) == _PREIMAGE_SIZE and _OP_SHA256_PUSH32 + sha256(preimage) in leaf
