"""Load the compiled contracts (`contracts/build/*.json`, written by `contracts/compile.js`) and check them.

An artifact is `{"abi": [...], "bytecode": "0x..."}`. Loading checks that the ABI carries the whole fixed
interface this package calls (functions, events, errors), so a stale or partial build fails at start-up with a
message naming what is missing, not later with a confusing decoding error.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / "contracts" / "build"

ETHER_SWAP = "EtherSwap"
LOAN = "BtcCollateralLoan"

REQUIRED_INTERFACE: dict[str, dict[str, frozenset[str]]] = {
    ETHER_SWAP: {
        "function": frozenset({"setLoanContract", "loanContract", "lock", "claim", "refund", "hashValues", "swaps"}),
        "event": frozenset({"LoanContractSet", "Lockup", "Claim", "Refund"}),
        "error": frozenset(
            {
                "NotLoanContract",
                "SwapNotFound",
                "SwapExists",
                "TimelockNotReached",
                "ZeroAmount",
                "AlreadyLinked",
                "NotDeployer",
            }
        ),
    },
    LOAN: {
        "function": frozenset(
            {
                "updateParameters",
                "parameters",
                "parametersVersion",
                "etherSwap",
                "loanCount",
                "getLoan",
                "lockedBalance",
                "requestLoan",
                "cancelRequest",
                "commitLenderHash",
                "extendLoanOffer",
                "acceptLoanOffer",
                "withdrawLoanOffer",
                "attemptRepayment",
                "acceptLoanRepayment",
                "withdrawRepaymentAttempt",
                "markAsDefaulted",
                "owner",
            }
        ),
        "event": frozenset(
            {
                "ParametersUpdated",
                "LoanRequested",
                "LoanRequestCancelled",
                "LenderHashCommitted",
                "LoanOffered",
                "LoanActivated",
                "LoanOfferWithdrawn",
                "RepaymentAttempted",
                "RepaymentAccepted",
                "RepaymentWithdrawn",
                "LoanDefaulted",
            }
        ),
        "error": frozenset(
            {
                "UnknownLoan",
                "WrongStatus",
                "NotBorrower",
                "WrongValue",
                "AmountOutOfBounds",
                "ZeroValue",
                "HashAlreadyUsed",
                "LenderHashAlreadySet",
                "LenderHashNotSet",
                "TooEarly",
                "TooLate",
                "WrongPreimage",
                "InvalidParameters",
                "PayoutFailed",
                "ParametersVersionMismatch",
            }
        ),
    },
}


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: tuple[Mapping[str, Any], ...]
    bytecode: bytes
    path: Path

    @property
    def bytecode_sha256(self) -> str:
        """Identifies exactly which build was deployed (recorded in the deployment file)."""
        return hashlib.sha256(self.bytecode).hexdigest()

    def entries(self, kind: str) -> list[Mapping[str, Any]]:
        return [entry for entry in self.abi if entry.get("type") == kind]


def parse_artifact(name: str, document: Any, path: Path) -> Artifact:
    """Validate a decoded artifact document; raise `ArtifactError` naming the first problem."""
    if not isinstance(document, Mapping):
        raise ArtifactError(f"{path}: expected a JSON object with 'abi' and 'bytecode'")
    abi = document.get("abi")
    if not isinstance(abi, Sequence) or isinstance(abi, str) or not all(isinstance(e, Mapping) for e in abi):
        raise ArtifactError(f"{path}: 'abi' must be a list of ABI entries")
    bytecode_hex = document.get("bytecode")
    if isinstance(bytecode_hex, Mapping):  # some toolchains nest it: {"bytecode": {"object": "0x…"}}
        bytecode_hex = bytecode_hex.get("object")
    if not isinstance(bytecode_hex, str):
        raise ArtifactError(f"{path}: 'bytecode' must be a hex string")
    text = bytecode_hex[2:] if bytecode_hex.startswith("0x") else bytecode_hex
    try:
        bytecode = bytes.fromhex(text)
    except ValueError:
        raise ArtifactError(f"{path}: 'bytecode' is not hex (unlinked library placeholders?)") from None
    if not bytecode:
        raise ArtifactError(f"{path}: 'bytecode' is empty (an interface or abstract contract?)")
    required = REQUIRED_INTERFACE.get(name, {})
    for kind, names in required.items():
        present = {entry.get("name") for entry in abi if entry.get("type") == kind}
        missing = sorted(names - present)
        if missing:
            raise ArtifactError(f"{path}: the {name} ABI lacks {kind}(s) {', '.join(missing)}: rebuild the contracts")
    return Artifact(name=name, abi=tuple(abi), bytecode=bytecode, path=path)


def load_artifact(name: str, build_dir: Path | None = None) -> Artifact:
    path = (build_dir or BUILD_DIR) / f"{name}.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist: compile the contracts (node contracts/compile.js)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from None
    return parse_artifact(name, document, path)


@dataclass(frozen=True)
class Artifacts:
    ether_swap: Artifact
    loan: Artifact


@functools.cache
def _cached(build_dir: Path) -> Artifacts:
    return Artifacts(ether_swap=load_artifact(ETHER_SWAP, build_dir), loan=load_artifact(LOAN, build_dir))


def load_artifacts(build_dir: Path | None = None, *, reload: bool = False) -> Artifacts:
    """Both artifacts, validated. Cached per directory; `reload=True` re-reads the files."""
    directory = (build_dir or BUILD_DIR).resolve()
    if reload:
        _cached.cache_clear()
    return _cached(directory)
