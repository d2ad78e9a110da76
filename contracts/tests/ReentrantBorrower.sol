// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @dev Test-only: a borrower contract that tries to re-enter the loan contract (or EtherSwap) whenever it
/// receives coin. It records every re-entry attempt and its revert data, and can either swallow the failure
/// (to show that the outer payout still happens exactly once) or bubble it up (to show the whole call reverts).
interface ILoan {
    function requestLoan(
        uint256 amount,
        bytes32 borrowerBtcPubkey,
        bytes32 borrowerHash,
        bytes32 escrowTxid,
        uint32 escrowVout,
        uint64 escrowSats,
        uint256 shownParametersVersion
    ) external payable returns (uint256);
    function cancelRequest(uint256 loanId) external;
    function acceptLoanOffer(uint256 loanId, bytes32 borrowerPreimage) external;
    function withdrawRepaymentAttempt(uint256 loanId) external;
    function attemptRepayment(uint256 loanId) external payable;
}

interface ISwap {
    function claim(bytes32 preimage, uint256 amount, address claimAddress, address refundAddress, uint256 timelock)
        external;
}

contract ReentrantBorrower {
    enum Attack {
        None,
        CancelRequest,
        AcceptLoanOffer,
        WithdrawRepaymentAttempt,
        SwapClaim
    }

    ILoan public immutable loan;
    ISwap public immutable swap;
    address public immutable operator;

    Attack public attack;
    bool public bubble;
    uint256 public targetLoanId;
    bytes32 public preimage;
    uint256 public swapAmount;
    uint256 public swapTimelock;
    address public swapRefund;

    uint256 public receipts;
    uint256 public reentryAttempts;
    uint256 public reentrySuccesses;
    bytes public lastRevertData;
    bool private _inside;

    constructor(address loan_, address swap_) {
        loan = ILoan(loan_);
        swap = ISwap(swap_);
        operator = msg.sender;
    }

    modifier onlyOperator() {
        require(msg.sender == operator, "operator only");
        _;
    }

    function configure(Attack attack_, bool bubble_, uint256 loanId, bytes32 preimage_) external onlyOperator {
        attack = attack_;
        bubble = bubble_;
        targetLoanId = loanId;
        preimage = preimage_;
    }

    function configureSwap(uint256 amount, uint256 timelock, address refund) external onlyOperator {
        swapAmount = amount;
        swapTimelock = timelock;
        swapRefund = refund;
    }

    function request(
        uint256 amount,
        bytes32 borrowerBtcPubkey,
        bytes32 borrowerHash,
        bytes32 escrowTxid,
        uint32 escrowVout,
        uint64 escrowSats,
        uint256 shownParametersVersion
    ) external payable onlyOperator returns (uint256) {
        return loan.requestLoan{value: msg.value}(
            amount, borrowerBtcPubkey, borrowerHash, escrowTxid, escrowVout, escrowSats, shownParametersVersion
        );
    }

    function cancel(uint256 loanId) external onlyOperator {
        loan.cancelRequest(loanId);
    }

    function accept(uint256 loanId, bytes32 borrowerPreimage) external onlyOperator {
        loan.acceptLoanOffer(loanId, borrowerPreimage);
    }

    function withdrawRepayment(uint256 loanId) external onlyOperator {
        loan.withdrawRepaymentAttempt(loanId);
    }

    receive() external payable {
        receipts += 1;
        if (attack == Attack.None || _inside) return;
        _inside = true;
        reentryAttempts += 1;
        bool ok;
        bytes memory data;
        if (attack == Attack.CancelRequest) {
            (ok, data) = address(loan).call(abi.encodeCall(ILoan.cancelRequest, (targetLoanId)));
        } else if (attack == Attack.AcceptLoanOffer) {
            (ok, data) = address(loan).call(abi.encodeCall(ILoan.acceptLoanOffer, (targetLoanId, preimage)));
        } else if (attack == Attack.WithdrawRepaymentAttempt) {
            (ok, data) = address(loan).call(abi.encodeCall(ILoan.withdrawRepaymentAttempt, (targetLoanId)));
        } else {
            (ok, data) = address(swap).call(
                abi.encodeCall(ISwap.claim, (preimage, swapAmount, address(this), swapRefund, swapTimelock))
            );
        }
        _inside = false;
        if (ok) {
            reentrySuccesses += 1;
        } else {
            lastRevertData = data;
            if (bubble) {
                assembly {
                    revert(add(data, 32), mload(data))
                }
            }
        }
    }
}
