"""Standalone consensus script verification through libbitcoinkernel (py-bitcoinkernel).

``verify_input`` runs Bitcoin Core's own script interpreter (``btck_script_pubkey_verify``) with all consensus
flags (P2SH, DERSIG, NULLDUMMY, CLTV, CSV, WITNESS, TAPROOT) on one input of a fully signed transaction, given
every output the transaction spends. It proves a witness satisfies its prevout's script without a node; it
does not check relative timelocks against a chain (BIP-68 is a block-level rule) nor policy.

py-bitcoinkernel aborts the whole process on C API misuse, so every argument is validated here first.
"""

from __future__ import annotations

from bitcoin.errors import TransactionError
from bitcoin.transactions import Transaction, TxOut


def verify_input(tx: Transaction, input_index: int, spent_outputs: list[TxOut] | tuple[TxOut, ...]) -> None:
    """Raise ``TransactionError`` unless input ``input_index`` of ``tx`` validly spends its prevout."""
    import pbk  # imported lazily: loading libbitcoinkernel is slow and most callers never need it

    if not isinstance(tx, Transaction):
        raise TransactionError("verify_input needs a Transaction")
    if isinstance(input_index, bool) or not isinstance(input_index, int) or not 0 <= input_index < len(tx.inputs):
        raise TransactionError(f"input index {input_index!r} is out of range")
    if len(spent_outputs) != len(tx.inputs) or not all(isinstance(out, TxOut) for out in spent_outputs):
        raise TransactionError("exactly one spent TxOut per input is required")
    if not tx.outputs:
        raise TransactionError("transaction has no outputs")
    try:
        kernel_tx = pbk.Transaction(tx.serialize())
    except RuntimeError as error:
        raise TransactionError(f"libbitcoinkernel cannot parse the transaction: {error}") from None
    kernel_spent = [pbk.TransactionOutput(pbk.ScriptPubkey(out.script_pubkey), out.value) for out in spent_outputs]
    precomputed = pbk.script.PrecomputedTransactionData(kernel_tx, kernel_spent)
    spent = spent_outputs[input_index]
    try:
        valid = pbk.ScriptPubkey(spent.script_pubkey).verify(
            spent.value, kernel_tx, precomputed, input_index, pbk.ScriptVerificationFlags.ALL
        )
    except pbk.ScriptVerifyException as error:
        raise TransactionError(f"script verification could not run: {error}") from None
    if not valid:
        raise TransactionError(f"input {input_index} does not satisfy its prevout script")
