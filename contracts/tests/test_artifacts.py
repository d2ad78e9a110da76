"""The committed artifacts: fresh-compile equality, the exact interface the Python client relies on, compiler
settings, and bytecode free of post-istanbul opcodes (Rootstock)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from contracts.tests.helpers import BUILD_DIR, CONTRACTS_DIR, load_artifact

REPO_ROOT = CONTRACTS_DIR.parent
NODE = shutil.which("node")

PARAMS = "(uint64,uint64,uint32,uint64,uint64,uint32,uint32,uint32,uint256,uint16,uint16,uint16,uint64,uint256,uint256,uint16,uint16,uint64,bytes32)"  # noqa: E501
LOAN = (
    "(address,address,uint8,uint256,uint256,uint256,uint256,bytes32,bytes32,bytes32,bytes32,bytes32,uint32,uint64,"
    f"uint64,uint64,uint64,uint64,uint256,{PARAMS})"
)

SWAP_INTERFACE = {
    "constructor()",
    "function setLoanContract(address loanContract)",
    "function loanContract() returns (address)",
    "function lock(bytes32 preimageHash,address claimAddress,address refundAddress,uint256 timelock)",
    "function claim(bytes32 preimage,uint256 amount,address claimAddress,address refundAddress,uint256 timelock)",
    "function refund(bytes32 preimageHash,uint256 amount,address claimAddress,address refundAddress,uint256 timelock)",
    "function hashValues(bytes32 preimageHash,uint256 amount,address claimAddress,address refundAddress,"
    "uint256 timelock) returns (bytes32)",
    "function swaps(bytes32) returns (bool)",
    "event LoanContractSet(address loanContract)",
    "event Lockup(bytes32 indexed preimageHash,uint256 amount,address claimAddress,address indexed refundAddress,"
    "uint256 timelock)",
    "event Claim(bytes32 indexed preimageHash,bytes32 preimage)",
    "event Refund(bytes32 indexed preimageHash)",
    "error NotLoanContract(address caller)",
    "error SwapNotFound(bytes32 swapHash)",
    "error SwapExists(bytes32 swapHash)",
    "error TimelockNotReached(uint256 timelock)",
    "error ZeroAmount()",
    "error AlreadyLinked()",
    "error NotDeployer(address caller)",
}

LOAN_INTERFACE = {
    f"constructor(address etherSwap,{PARAMS} initialParameters)",
    f"function updateParameters({PARAMS} p)",
    f"function parameters() returns ({PARAMS})",
    "function parametersVersion() returns (uint256)",
    "function etherSwap() returns (address)",
    "function loanCount() returns (uint256)",
    f"function getLoan(uint256 loanId) returns ({LOAN})",
    "function lockedBalance() returns (uint256)",
    "function requestLoan(uint256 amount,bytes32 borrowerBtcPubkey,bytes32 borrowerHash,bytes32 escrowTxid,"
    "uint32 escrowVout,uint64 escrowSats,uint256 shownParametersVersion) returns (uint256)",
    "function cancelRequest(uint256 loanId)",
    "function commitLenderHash(uint256 loanId,bytes32 lenderHash)",
    "function extendLoanOffer(uint256 loanId)",
    "function acceptLoanOffer(uint256 loanId,bytes32 borrowerPreimage)",
    "function withdrawLoanOffer(uint256 loanId)",
    "function attemptRepayment(uint256 loanId)",
    "function acceptLoanRepayment(uint256 loanId,bytes32 lenderPreimage)",
    "function withdrawRepaymentAttempt(uint256 loanId)",
    "function markAsDefaulted(uint256 loanId)",
    "event ParametersUpdated(uint256 indexed version)",
    "event LoanRequested(uint256 indexed loanId,address indexed borrower,uint256 amount,uint256 repaymentAmount,"
    "bytes32 borrowerBtcPubkey,bytes32 borrowerHash,bytes32 escrowTxid,uint32 escrowVout,uint64 escrowSats,"
    "uint256 parametersVersion)",
    "event LoanRequestCancelled(uint256 indexed loanId)",
    "event LenderHashCommitted(uint256 indexed loanId,bytes32 lenderHash)",
    "event LoanOffered(uint256 indexed loanId,uint256 amount,uint256 bond,uint256 offerDeadlineBlock)",
    "event LoanActivated(uint256 indexed loanId,bytes32 borrowerPreimage,uint256 repaymentDeadlineBlock)",
    "event LoanOfferWithdrawn(uint256 indexed loanId)",
    "event RepaymentAttempted(uint256 indexed loanId,address indexed payer,uint256 amount,"
    "uint256 acceptanceDeadlineBlock)",
    "event RepaymentAccepted(uint256 indexed loanId,bytes32 lenderPreimage)",
    "event RepaymentWithdrawn(uint256 indexed loanId)",
    "event LoanDefaulted(uint256 indexed loanId)",
    "error UnknownLoan(uint256 loanId)",
    "error WrongStatus(uint256 loanId,uint8 current)",
    "error NotBorrower(uint256 loanId,address caller)",
    "error WrongValue(uint256 expected,uint256 sent)",
    "error AmountOutOfBounds(uint256 amount,uint256 min,uint256 max)",
    "error ZeroValue(string field)",
    "error HashAlreadyUsed(bytes32 hash)",
    "error LenderHashAlreadySet(uint256 loanId)",
    "error LenderHashNotSet(uint256 loanId)",
    "error TooEarly(uint256 loanId,uint256 opensAtBlock)",
    "error TooLate(uint256 loanId,uint256 closedAtBlock)",
    "error WrongPreimage()",
    "error InvalidParameters(string reason)",
    "error PayoutFailed(address to,uint256 amount)",
    "error ParametersVersionMismatch(uint256 shown,uint256 inForce)",
    "error OwnableUnauthorizedAccount(address account)",
    "error ReentrancyGuardReentrantCall()",
}

PARAM_NAMES = [
    "offerWindowBlocks",
    "requestToOfferAllowanceBlocks",
    "escrowTimelockBtcBlocks",
    "loanDurationBlocks",
    "repaymentWindowBlocks",
    "collateralTimelockBtcBlocks",
    "evmBlocksPerBtcBlock",
    "safetyBtcBlocks",
    "processingFeeWei",
    "bondPercent",
    "originationFeeBps",
    "interestBps",
    "blocksPerYear",
    "minAmountWei",
    "maxAmountWei",
    "minCollateralRatioBps",
    "driftMarginBps",
    "acceptCutoffBlocks",
    "lenderBtcPubkey",
]
LOAN_NAMES = [
    "borrower",
    "lender",
    "status",
    "amount",
    "bond",
    "processingFee",
    "repaymentAmount",
    "borrowerBtcPubkey",
    "lenderBtcPubkey",
    "borrowerHash",
    "lenderHash",
    "escrowTxid",
    "escrowVout",
    "escrowSats",
    "requestBlock",
    "offerBlock",
    "activationBlock",
    "repaymentBlock",
    "parametersVersion",
    "params",
]


def abi_type(item: dict) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in item["components"]) + ")" + item["type"][len("tuple") :]
    return item["type"]


def signature(item: dict) -> str:
    def arg(i: dict) -> str:
        return f"{abi_type(i)}{' indexed' if i.get('indexed') else ''} {i['name']}".rstrip()

    args = ",".join(arg(i) for i in item.get("inputs", []))
    if item["type"] == "constructor":
        return f"constructor({args})"
    text = f"{item['type']} {item['name']}({args})"
    outputs = item.get("outputs") or []
    if outputs:
        text += " returns (" + ",".join(abi_type(o) for o in outputs) + ")"
    return text


def abi_signatures(abi: list[dict]) -> set[str]:
    return {signature(i) for i in abi}


def test_committed_artifacts_match_a_fresh_compile():
    assert NODE, "node is required to compile the contracts"
    result = subprocess.run(
        [NODE, "contracts/compile.js", "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "artifacts up to date (3 contracts)" in result.stdout


def test_check_mode_detects_stale_artifacts(tmp_path: Path):
    """--check fails on a modified artifact and on a source change that was not recompiled."""
    workdir = tmp_path / "repo"
    shutil.copytree(CONTRACTS_DIR, workdir / "contracts", ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "node_modules").symlink_to(REPO_ROOT / "node_modules")

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [NODE, "contracts/compile.js", "--check"], cwd=workdir, capture_output=True, text=True, timeout=300
        )

    artifact = workdir / "contracts" / "build" / "EtherSwap.json"
    original = artifact.read_text()
    artifact.write_text(original.replace('"evmVersion": "istanbul"', '"evmVersion": "cancun"'))
    result = check()
    assert result.returncode == 1
    assert "contracts/build/EtherSwap.json: differs from a fresh compile" in result.stderr
    artifact.write_text(original)
    source = workdir / "contracts" / "BtcCollateralLoan.sol"
    source.write_text(source.read_text().replace("uint16 bondPercent;", "uint16 bondPercent; // changed"))
    result = check()
    assert result.returncode == 1
    assert "BtcCollateralLoan.json: differs" in result.stderr


@pytest.mark.parametrize(("name", "expected"), [("EtherSwap", SWAP_INTERFACE), ("BtcCollateralLoan", LOAN_INTERFACE)])
def test_interface_is_exactly_as_specified(name, expected):
    """Every specified function, event and error exists with the specified parameter names, types and order."""
    actual = abi_signatures(load_artifact(name)["abi"])
    missing = expected - actual
    assert not missing, f"{name} lacks {sorted(missing)}"


def test_struct_field_names_and_order():
    abi = load_artifact("BtcCollateralLoan")["abi"]
    (get_loan,) = [i for i in abi if i.get("name") == "getLoan"]
    loan = get_loan["outputs"][0]
    assert [c["name"] for c in loan["components"]] == LOAN_NAMES
    assert [c["name"] for c in loan["components"][-1]["components"]] == PARAM_NAMES
    (status,) = [c for c in loan["components"] if c["name"] == "status"]
    assert status["internalType"] == "enum BtcCollateralLoan.LoanStatus"


def test_compiler_settings_and_source_hash():
    for name in ("EtherSwap", "BtcCollateralLoan"):
        art = load_artifact(name)
        assert art["compiler"]["version"].startswith("0.8.30+")
        assert art["compiler"]["evmVersion"] == "istanbul"
        assert art["compiler"]["optimizer"] == {"enabled": True, "runs": 200}
        assert art["compiler"]["viaIR"] is False
        assert art["compiler"]["metadataBytecodeHash"] == "none"
        digest = hashlib.sha256()
        for source in art["sources"]:
            path = REPO_ROOT / source if source.startswith("contracts/") else REPO_ROOT / "node_modules" / source
            digest.update(source.encode() + b"\0" + path.read_bytes() + b"\0")
        assert art["sourceHash"] == "0x" + digest.hexdigest()
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 2
        # EIP-170: deployable code stays under 24576 bytes.
        assert (len(art["deployedBytecode"]) - 2) // 2 < 24576
    assert "@openzeppelin/contracts/utils/ReentrancyGuard.sol" in load_artifact("BtcCollateralLoan")["sources"]
    assert not any("console" in s or "Transient" in s for s in load_artifact("BtcCollateralLoan")["sources"])


def opcodes(code_hex: str) -> list[int]:
    """Opcodes of runtime code, skipping PUSH data and the trailing metadata CBOR (its length is the last 2 bytes)."""
    code = bytes.fromhex(code_hex[2:])
    cbor_length = int.from_bytes(code[-2:], "big")
    code = code[: len(code) - 2 - cbor_length]
    result, i = [], 0
    while i < len(code):
        op = code[i]
        result.append(op)
        i += 1 + (op - 0x5F if 0x60 <= op <= 0x7F else 0)
    return result


@pytest.mark.parametrize("name", ["EtherSwap", "BtcCollateralLoan"])
def test_no_post_istanbul_opcodes(name):
    """Rootstock runs istanbul: no PUSH0 (0x5f), TLOAD/TSTORE (0x5c/0x5d), MCOPY (0x5e), BASEFEE (0x48),
    SELFDESTRUCT (0xff) nor BLOBHASH/BLOBBASEFEE (0x49/0x4a) in the runtime code."""
    art = load_artifact(name)
    ops = opcodes(art["deployedBytecode"])
    assert len(ops) > 100
    forbidden = {0x5F, 0x5C, 0x5D, 0x5E, 0x48, 0x49, 0x4A, 0xFF}
    assert not forbidden & set(ops)


def test_artifacts_are_plain_json_with_trailing_newline():
    for path in sorted(BUILD_DIR.rglob("*.json")):
        text = path.read_text()
        assert text.endswith("}\n")
        assert json.loads(text)["contractName"] == path.stem


def test_unexpected_compiler_warning_fails_the_build(tmp_path: Path):
    workdir = tmp_path / "repo"
    shutil.copytree(CONTRACTS_DIR, workdir / "contracts", ignore=shutil.ignore_patterns("__pycache__", "build"))
    (workdir / "node_modules").symlink_to(REPO_ROOT / "node_modules")
    source = workdir / "contracts" / "EtherSwap.sol"
    source.write_text(source.read_text().replace("if (msg.value == 0) revert ZeroAmount();", "uint256 unused = 1;"))
    result = subprocess.run([NODE, "contracts/compile.js"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "Unused local variable" in result.stderr
    assert not (workdir / "contracts" / "build" / "EtherSwap.json").exists()
