// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {EtherSwap} from "./EtherSwap.sol";

/// @title BtcCollateralLoan
/// @notice rBTC loans against Bitcoin collateral locked in a taproot escrow. One lender per deployment: the owner.
/// The borrower's hash hB unlocks the loan amount (and, on Bitcoin, the collateral lock TX_1); the lender's hash hL
/// unlocks the repayment (and, on Bitcoin, the collateral release). Every deadline has one side that may act
/// before it and the other from it on. No function moves funds that belong to a loan except the loan's own
/// transitions: there is no sweep and no emergency withdraw.
/// @dev Built for evmVersion istanbul (Rootstock). OpenZeppelin's storage-based ReentrancyGuard (not the transient one).
contract BtcCollateralLoan is Ownable2Step, ReentrancyGuard {
    enum LoanStatus {
        None,
        Requested,
        Offered,
        Active,
        RepaymentInProgress,
        Repaid,
        Cancelled,
        OfferExpired,
        Defaulted,
        RepaymentRefunded
    }

    struct Parameters {
        uint64 offerWindowBlocks; // t_B (EVM blocks)
        uint64 requestToOfferAllowanceBlocks; // allowance between request and offer (EVM blocks), ordering rule only
        uint32 escrowTimelockBtcBlocks; // t_0 (BTC blocks)
        uint64 loanDurationBlocks; // t_D (EVM blocks)
        uint64 repaymentWindowBlocks; // t_L (EVM blocks)
        uint32 collateralTimelockBtcBlocks; // t_1 (BTC blocks)
        uint32 evmBlocksPerBtcBlock; // ratio
        uint32 safetyBtcBlocks; // safety margin (BTC blocks)
        uint256 processingFeeWei;
        uint16 bondPercent;
        uint16 originationFeeBps; // paid on Bitcoin in TX_1, recorded here for the snapshot
        uint16 interestBps; // per year
        uint64 blocksPerYear;
        uint256 minAmountWei;
        uint256 maxAmountWei;
        uint16 minCollateralRatioBps; // TX_1's collateral / the amount, in bps; checked off chain (Bitcoin side)
        uint16 driftMarginBps; // share of an EVM window a Bitcoin timelock must cover on top of it (chain drift)
        uint64 acceptCutoffBlocks; // the borrower's client starts no accept with fewer offer blocks left (EVM blocks)
        bytes32 lenderBtcPubkey; // xL, x-only
    }

    struct Loan {
        address borrower;
        address lender;
        LoanStatus status;
        uint256 amount;
        uint256 bond;
        uint256 processingFee;
        uint256 repaymentAmount;
        bytes32 borrowerBtcPubkey;
        bytes32 lenderBtcPubkey;
        bytes32 borrowerHash;
        bytes32 lenderHash;
        bytes32 escrowTxid;
        uint32 escrowVout;
        uint64 escrowSats;
        uint64 requestBlock;
        uint64 offerBlock;
        uint64 activationBlock;
        uint64 repaymentBlock;
        uint256 parametersVersion;
        Parameters params; // snapshot taken at requestLoan; never changes afterwards
    }

    /// @dev How a loan is stored: `Loan` without the parameter snapshot, which is stored once per version in
    /// `_parametersByVersion` (versions are immutable once written) and joined in by `getLoan`.
    struct LoanRecord {
        address borrower;
        address lender;
        LoanStatus status;
        uint256 amount;
        uint256 bond;
        uint256 processingFee;
        uint256 repaymentAmount;
        bytes32 borrowerBtcPubkey;
        bytes32 lenderBtcPubkey;
        bytes32 borrowerHash;
        bytes32 lenderHash;
        bytes32 escrowTxid;
        uint32 escrowVout;
        uint64 escrowSats;
        uint64 requestBlock;
        uint64 offerBlock;
        uint64 activationBlock;
        uint64 repaymentBlock;
        uint256 parametersVersion;
    }

    /// @dev Upper bound on amounts, so that interest and bond arithmetic can never overflow.
    uint256 private constant MAX_AMOUNT_LIMIT = type(uint128).max;
    uint256 private constant MAX_TIMELOCK_BTC_BLOCKS = 65535; // BIP-68 block-based relative timelock
    uint256 private constant BPS = 10000; // 100 % in basis points
    /// @dev Upper bound on the drift margin (100 %): a Bitcoin timelock then covers twice its EVM window. A larger
    /// drift means the assumed EVM-blocks-per-BTC-block ratio is wrong; change the ratio instead.
    uint256 private constant MAX_DRIFT_MARGIN_BPS = 10000;

    EtherSwap private immutable _etherSwap;

    /// @dev Every parameter set ever in force, by version (1, 2, ...). Written once, never modified: a loan's
    /// snapshot is the set of the version current at its request.
    mapping(uint256 => Parameters) private _parametersByVersion;
    uint256 public parametersVersion;
    uint256 public loanCount;
    /// @notice Wei this contract holds for open loans: processing fees (Requested, Offered) and bonds (Offered,
    /// Active, RepaymentInProgress).
    uint256 public lockedBalance;
    /// @notice Every hash reserved by a loan: a lender hash from `commitLenderHash` on, a borrower hash from
    /// `extendLoanOffer` on (a request alone reserves nothing, so a copied request cannot block the real one).
    /// Never cleared: a hash (hence a preimage) backs money in one loan only.
    mapping(bytes32 => bool) public hashUsed;

    mapping(uint256 => LoanRecord) private _loans;

    event ParametersUpdated(uint256 indexed version);
    event LoanRequested(
        uint256 indexed loanId,
        address indexed borrower,
        uint256 amount,
        uint256 repaymentAmount,
        bytes32 borrowerBtcPubkey,
        bytes32 borrowerHash,
        bytes32 escrowTxid,
        uint32 escrowVout,
        uint64 escrowSats,
        uint256 parametersVersion
    );
    event LoanRequestCancelled(uint256 indexed loanId);
    event LenderHashCommitted(uint256 indexed loanId, bytes32 lenderHash);
    event LoanOffered(uint256 indexed loanId, uint256 amount, uint256 bond, uint256 offerDeadlineBlock);
    event LoanActivated(uint256 indexed loanId, bytes32 borrowerPreimage, uint256 repaymentDeadlineBlock);
    event LoanOfferWithdrawn(uint256 indexed loanId);
    event RepaymentAttempted(
        uint256 indexed loanId,
        address indexed payer,
        uint256 amount,
        uint256 acceptanceDeadlineBlock
    );
    event RepaymentAccepted(uint256 indexed loanId, bytes32 lenderPreimage);
    event RepaymentWithdrawn(uint256 indexed loanId);
    event LoanDefaulted(uint256 indexed loanId);

    error UnknownLoan(uint256 loanId);
    error WrongStatus(uint256 loanId, LoanStatus current);
    error NotBorrower(uint256 loanId, address caller);
    error WrongValue(uint256 expected, uint256 sent);
    error AmountOutOfBounds(uint256 amount, uint256 min, uint256 max);
    error ZeroValue(string field);
    error HashAlreadyUsed(bytes32 hash);
    error LenderHashAlreadySet(uint256 loanId);
    error LenderHashNotSet(uint256 loanId);
    error TooEarly(uint256 loanId, uint256 opensAtBlock);
    error TooLate(uint256 loanId, uint256 closedAtBlock);
    error WrongPreimage();
    error InvalidParameters(string reason);
    error PayoutFailed(address to, uint256 amount);
    error RenounceOwnershipDisabled();
    /// @notice A request named another parameters version than the one in force: the owner changed the terms
    /// between what the borrower was shown and the block the request was mined in.
    error ParametersVersionMismatch(uint256 shown, uint256 inForce);

    constructor(address etherSwap, Parameters memory initialParameters) Ownable(msg.sender) {
        if (etherSwap.code.length == 0) revert InvalidParameters("etherSwap is not a contract");
        _validate(initialParameters);
        _etherSwap = EtherSwap(etherSwap);
        _parametersByVersion[1] = initialParameters;
        parametersVersion = 1;
        emit ParametersUpdated(1);
    }

    // ------------------------------------------------------------------ parameters (owner)

    /// @notice Replace the parameters for loans requested from now on. Existing loans keep their snapshot.
    function updateParameters(Parameters calldata p) external onlyOwner {
        _validate(p);
        uint256 version = parametersVersion + 1;
        _parametersByVersion[version] = p;
        parametersVersion = version;
        emit ParametersUpdated(version);
    }

    /// @notice The owner cannot walk away: loans in flight need the lender's calls to settle.
    function renounceOwnership() public view override onlyOwner {
        revert RenounceOwnershipDisabled();
    }

    // ------------------------------------------------------------------ views

    function etherSwap() external view returns (address) {
        return address(_etherSwap);
    }

    function parameters() external view returns (Parameters memory) {
        return _parametersByVersion[parametersVersion];
    }

    function getLoan(uint256 loanId) external view returns (Loan memory loan) {
        LoanRecord storage r = _existing(loanId);
        loan.borrower = r.borrower;
        loan.lender = r.lender;
        loan.status = r.status;
        loan.amount = r.amount;
        loan.bond = r.bond;
        loan.processingFee = r.processingFee;
        loan.repaymentAmount = r.repaymentAmount;
        loan.borrowerBtcPubkey = r.borrowerBtcPubkey;
        loan.lenderBtcPubkey = r.lenderBtcPubkey;
        loan.borrowerHash = r.borrowerHash;
        loan.lenderHash = r.lenderHash;
        loan.escrowTxid = r.escrowTxid;
        loan.escrowVout = r.escrowVout;
        loan.escrowSats = r.escrowSats;
        loan.requestBlock = r.requestBlock;
        loan.offerBlock = r.offerBlock;
        loan.activationBlock = r.activationBlock;
        loan.repaymentBlock = r.repaymentBlock;
        loan.parametersVersion = r.parametersVersion;
        loan.params = _parametersByVersion[r.parametersVersion];
    }

    // ------------------------------------------------------------------ borrower: request / cancel

    /// @notice Request a loan against the escrow committed to xB and hB, paying the processing fee. hB must not be
    /// reserved (`hashUsed`), but the request does not reserve it: several requests may share hB (a copy taken
    /// from the mempool, or a new request after a cancel); the lender offers only to the one whose borrower it
    /// knows, and the offer reserves hB. `shownParametersVersion` is the parameters version the borrower was shown:
    /// the request reverts (`ParametersVersionMismatch`) when another version is in force, so the owner cannot
    /// slip new terms (a shorter offer window or loan, a smaller bond) in front of a pending request.
    function requestLoan(
        uint256 amount,
        bytes32 borrowerBtcPubkey,
        bytes32 borrowerHash,
        bytes32 escrowTxid,
        uint32 escrowVout,
        uint64 escrowSats,
        uint256 shownParametersVersion
    ) external payable nonReentrant returns (uint256 loanId) {
        uint256 version = parametersVersion;
        if (shownParametersVersion != version) revert ParametersVersionMismatch(shownParametersVersion, version);
        Parameters storage p = _parametersByVersion[version];
        if (amount < p.minAmountWei || amount > p.maxAmountWei) {
            revert AmountOutOfBounds(amount, p.minAmountWei, p.maxAmountWei);
        }
        if (msg.value != p.processingFeeWei) revert WrongValue(p.processingFeeWei, msg.value);
        if (borrowerBtcPubkey == bytes32(0)) revert ZeroValue("borrowerBtcPubkey");
        if (borrowerHash == bytes32(0)) revert ZeroValue("borrowerHash");
        if (escrowTxid == bytes32(0)) revert ZeroValue("escrowTxid");
        if (escrowSats == 0) revert ZeroValue("escrowSats");
        if (hashUsed[borrowerHash]) revert HashAlreadyUsed(borrowerHash);

        loanId = ++loanCount;
        LoanRecord storage loan = _loans[loanId];
        loan.borrower = msg.sender;
        loan.status = LoanStatus.Requested;
        loan.amount = amount;
        loan.processingFee = msg.value;
        loan.repaymentAmount = amount + (amount * p.interestBps * p.loanDurationBlocks) / (10000 * uint256(p.blocksPerYear));
        loan.borrowerBtcPubkey = borrowerBtcPubkey;
        loan.lenderBtcPubkey = p.lenderBtcPubkey;
        loan.borrowerHash = borrowerHash;
        loan.escrowTxid = escrowTxid;
        loan.escrowVout = escrowVout;
        loan.escrowSats = escrowSats;
        loan.requestBlock = uint64(block.number);
        loan.parametersVersion = version;
        lockedBalance += msg.value;

        _emitRequested(loanId, loan);
    }

    /// @notice Withdraw an unoffered request: the processing fee back to the borrower. hB was never reserved, so
    /// the borrower may request again with the same hB and escrow.
    function cancelRequest(uint256 loanId) external nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _onlyBorrower(loanId, loan);
        _requireStatus(loanId, loan, LoanStatus.Requested);

        loan.status = LoanStatus.Cancelled;
        uint256 fee = loan.processingFee;
        lockedBalance -= fee;
        emit LoanRequestCancelled(loanId);

        _pay(loan.borrower, fee);
    }

    // ------------------------------------------------------------------ lender: hash / offer / withdraw

    /// @notice Commit hL for a requested loan and reserve it. A reserved hash (an offered hB or a committed hL) is
    /// refused; a hash only requested as some loan's hB is not (the lender picks hL, see README "Front-running").
    function commitLenderHash(uint256 loanId, bytes32 lenderHash) external onlyOwner nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.Requested);
        if (lenderHash == bytes32(0)) revert ZeroValue("lenderHash");
        if (loan.lenderHash != bytes32(0)) revert LenderHashAlreadySet(loanId);
        if (hashUsed[lenderHash]) revert HashAlreadyUsed(lenderHash);
        hashUsed[lenderHash] = true;

        loan.lenderHash = lenderHash;
        emit LenderHashCommitted(loanId, lenderHash);
    }

    /// @notice Offer the loan: the amount goes into EtherSwap under the stored hB, claimable by the borrower until
    /// offerBlock + t_B and refundable to the lender from then on; the bond stays here. Reserves hB: refused with
    /// `HashAlreadyUsed` if another loan's offer (or lender hash) already holds it, so at most one loan is ever
    /// offered under a given hB.
    function extendLoanOffer(uint256 loanId) external payable onlyOwner nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.Requested);
        if (loan.lenderHash == bytes32(0)) revert LenderHashNotSet(loanId);
        uint256 amount = loan.amount;
        uint256 bond = (amount * _params(loan).bondPercent) / 100;
        if (msg.value != amount + bond) revert WrongValue(amount + bond, msg.value);
        bytes32 borrowerHash = loan.borrowerHash;
        if (hashUsed[borrowerHash]) revert HashAlreadyUsed(borrowerHash);
        hashUsed[borrowerHash] = true;

        uint256 deadline = block.number + _params(loan).offerWindowBlocks;
        loan.status = LoanStatus.Offered;
        loan.lender = msg.sender;
        loan.bond = bond;
        loan.offerBlock = uint64(block.number);
        lockedBalance += bond;
        emit LoanOffered(loanId, amount, bond, deadline);

        _etherSwap.lock{value: amount}(borrowerHash, loan.borrower, msg.sender, deadline);
    }

    /// @notice Take back an offer the borrower did not accept: amount, bond and processing fee to the lender.
    function withdrawLoanOffer(uint256 loanId) external onlyOwner nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.Offered);
        uint256 deadline = _offerDeadline(loan);
        if (block.number < deadline) revert TooEarly(loanId, deadline);

        loan.status = LoanStatus.OfferExpired;
        address lender = loan.lender;
        uint256 payout = loan.bond + loan.processingFee;
        lockedBalance -= payout;
        emit LoanOfferWithdrawn(loanId);

        _etherSwap.refund(loan.borrowerHash, loan.amount, loan.borrower, lender, deadline);
        _pay(lender, payout);
    }

    // ------------------------------------------------------------------ borrower: accept

    /// @notice Accept the offer by revealing pB: amount and processing fee to the borrower. A reverted call still
    /// publishes pB, so clients must not call this close to the deadline: the borrower's client starts no accept with
    /// fewer than the loan's `acceptCutoffBlocks` blocks left. The contract does not enforce the cutoff: a revert
    /// would reveal pB all the same, and the window would merely end earlier.
    function acceptLoanOffer(uint256 loanId, bytes32 borrowerPreimage) external nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _onlyBorrower(loanId, loan);
        _requireStatus(loanId, loan, LoanStatus.Offered);
        uint256 deadline = _offerDeadline(loan);
        if (block.number >= deadline) revert TooLate(loanId, deadline);
        if (sha256(abi.encodePacked(borrowerPreimage)) != loan.borrowerHash) revert WrongPreimage();

        loan.status = LoanStatus.Active;
        loan.activationBlock = uint64(block.number);
        uint256 fee = loan.processingFee;
        lockedBalance -= fee;
        emit LoanActivated(loanId, borrowerPreimage, block.number + _params(loan).loanDurationBlocks);

        _etherSwap.claim(borrowerPreimage, loan.amount, loan.borrower, loan.lender, deadline);
        _pay(loan.borrower, fee);
    }

    // ------------------------------------------------------------------ repayment

    /// @notice Lock the repayment in EtherSwap under the stored hL: claimable by the lender until block + t_L,
    /// refundable to the borrower (whoever paid) from then on.
    function attemptRepayment(uint256 loanId) external payable nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.Active);
        uint256 dueBlock = _repaymentDeadline(loan);
        if (block.number >= dueBlock) revert TooLate(loanId, dueBlock);
        uint256 repayment = loan.repaymentAmount;
        if (msg.value != repayment) revert WrongValue(repayment, msg.value);

        uint256 deadline = block.number + _params(loan).repaymentWindowBlocks;
        loan.status = LoanStatus.RepaymentInProgress;
        loan.repaymentBlock = uint64(block.number);
        emit RepaymentAttempted(loanId, msg.sender, repayment, deadline);

        _etherSwap.lock{value: repayment}(loan.lenderHash, loan.lender, loan.borrower, deadline);
    }

    /// @notice Accept the repayment by revealing pL: repayment and bond to the lender.
    function acceptLoanRepayment(uint256 loanId, bytes32 lenderPreimage) external onlyOwner nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.RepaymentInProgress);
        uint256 deadline = _acceptanceDeadline(loan);
        if (block.number >= deadline) revert TooLate(loanId, deadline);
        if (sha256(abi.encodePacked(lenderPreimage)) != loan.lenderHash) revert WrongPreimage();

        loan.status = LoanStatus.Repaid;
        address lender = loan.lender;
        uint256 bond = loan.bond;
        lockedBalance -= bond;
        emit RepaymentAccepted(loanId, lenderPreimage);

        _etherSwap.claim(lenderPreimage, loan.repaymentAmount, lender, loan.borrower, deadline);
        _pay(lender, bond);
    }

    /// @notice The lender did not accept in time: repayment and bond to the borrower.
    function withdrawRepaymentAttempt(uint256 loanId) external nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _onlyBorrower(loanId, loan);
        _requireStatus(loanId, loan, LoanStatus.RepaymentInProgress);
        uint256 deadline = _acceptanceDeadline(loan);
        if (block.number < deadline) revert TooEarly(loanId, deadline);

        loan.status = LoanStatus.RepaymentRefunded;
        address borrower = loan.borrower;
        uint256 bond = loan.bond;
        lockedBalance -= bond;
        emit RepaymentWithdrawn(loanId);

        _etherSwap.refund(loan.lenderHash, loan.repaymentAmount, loan.lender, borrower, deadline);
        _pay(borrower, bond);
    }

    /// @notice No repayment by activation + t_D: the bond goes back to the lender (the collateral is taken on Bitcoin).
    function markAsDefaulted(uint256 loanId) external onlyOwner nonReentrant {
        LoanRecord storage loan = _existing(loanId);
        _requireStatus(loanId, loan, LoanStatus.Active);
        uint256 dueBlock = _repaymentDeadline(loan);
        if (block.number < dueBlock) revert TooEarly(loanId, dueBlock);

        loan.status = LoanStatus.Defaulted;
        uint256 bond = loan.bond;
        lockedBalance -= bond;
        emit LoanDefaulted(loanId);

        _pay(loan.lender, bond);
    }

    // ------------------------------------------------------------------ internals

    function _existing(uint256 loanId) private view returns (LoanRecord storage loan) {
        if (loanId == 0 || loanId > loanCount) revert UnknownLoan(loanId);
        return _loans[loanId];
    }

    function _onlyBorrower(uint256 loanId, LoanRecord storage loan) private view {
        if (msg.sender != loan.borrower) revert NotBorrower(loanId, msg.sender);
    }

    function _requireStatus(uint256 loanId, LoanRecord storage loan, LoanStatus expected) private view {
        if (loan.status != expected) revert WrongStatus(loanId, loan.status);
    }

    function _params(LoanRecord storage loan) private view returns (Parameters storage) {
        return _parametersByVersion[loan.parametersVersion];
    }

    function _offerDeadline(LoanRecord storage loan) private view returns (uint256) {
        return uint256(loan.offerBlock) + _params(loan).offerWindowBlocks;
    }

    function _repaymentDeadline(LoanRecord storage loan) private view returns (uint256) {
        return uint256(loan.activationBlock) + _params(loan).loanDurationBlocks;
    }

    function _acceptanceDeadline(LoanRecord storage loan) private view returns (uint256) {
        return uint256(loan.repaymentBlock) + _params(loan).repaymentWindowBlocks;
    }

    function _emitRequested(uint256 loanId, LoanRecord storage loan) private {
        emit LoanRequested(
            loanId,
            loan.borrower,
            loan.amount,
            loan.repaymentAmount,
            loan.borrowerBtcPubkey,
            loan.borrowerHash,
            loan.escrowTxid,
            loan.escrowVout,
            loan.escrowSats,
            loan.parametersVersion
        );
    }

    function _pay(address to, uint256 amount) private {
        if (amount == 0) return;
        (bool ok, ) = payable(to).call{value: amount}("");
        if (!ok) revert PayoutFailed(to, amount);
    }

    /// @dev One `InvalidParameters` reason per rule, checked in this order (evm/parameters.py `problems()` lists the
    /// same rules in the same order). With m = 10000 + driftMarginBps, the ordering rules of PROTOCOL.md in exact
    /// integer arithmetic (every term is far below 2^256: windows are uint64, the ratio uint32, m < 2^17):
    ///   t_0 * ratio * 10000 > (t_B + allowance) * m
    ///   t_1 * ratio * 10000 > (t_D + t_L) * m + safety * ratio * 10000
    function _validate(Parameters memory p) private pure {
        if (p.offerWindowBlocks == 0) revert InvalidParameters("offerWindowBlocks must be positive");
        if (p.loanDurationBlocks == 0) revert InvalidParameters("loanDurationBlocks must be positive");
        if (p.repaymentWindowBlocks == 0) revert InvalidParameters("repaymentWindowBlocks must be positive");
        if (p.evmBlocksPerBtcBlock == 0) revert InvalidParameters("evmBlocksPerBtcBlock must be positive");
        if (p.escrowTimelockBtcBlocks < 1 || p.escrowTimelockBtcBlocks > MAX_TIMELOCK_BTC_BLOCKS) {
            revert InvalidParameters("escrowTimelockBtcBlocks must be in [1, 65535]");
        }
        if (p.collateralTimelockBtcBlocks < 1 || p.collateralTimelockBtcBlocks > MAX_TIMELOCK_BTC_BLOCKS) {
            revert InvalidParameters("collateralTimelockBtcBlocks must be in [1, 65535]");
        }
        if (p.driftMarginBps > MAX_DRIFT_MARGIN_BPS) revert InvalidParameters("driftMarginBps must not exceed 10000");
        uint256 ratioBps = uint256(p.evmBlocksPerBtcBlock) * BPS;
        uint256 m = BPS + p.driftMarginBps;
        if (
            uint256(p.escrowTimelockBtcBlocks) * ratioBps <=
            (uint256(p.offerWindowBlocks) + p.requestToOfferAllowanceBlocks) * m
        ) {
            revert InvalidParameters("t_0 * ratio must exceed (t_B + request-to-offer allowance) * (1 + drift margin)");
        }
        if (
            uint256(p.collateralTimelockBtcBlocks) * ratioBps <=
            (uint256(p.loanDurationBlocks) + p.repaymentWindowBlocks) * m + uint256(p.safetyBtcBlocks) * ratioBps
        ) {
            revert InvalidParameters("t_1 * ratio must exceed (t_D + t_L) * (1 + drift margin) + safety * ratio");
        }
        if (p.acceptCutoffBlocks < 1 || p.acceptCutoffBlocks >= p.offerWindowBlocks) {
            revert InvalidParameters("acceptCutoffBlocks must be in [1, offerWindowBlocks - 1]");
        }
        if (p.minAmountWei == 0) revert InvalidParameters("minAmountWei must be positive");
        if (p.minAmountWei > p.maxAmountWei) revert InvalidParameters("minAmountWei must not exceed maxAmountWei");
        if (p.maxAmountWei > MAX_AMOUNT_LIMIT) revert InvalidParameters("maxAmountWei too large");
        if (p.bondPercent < 1 || p.bondPercent > 100) revert InvalidParameters("bondPercent must be in [1, 100]");
        if (p.minCollateralRatioBps < BPS || p.minCollateralRatioBps > BPS + uint256(p.bondPercent) * 100) {
            revert InvalidParameters("minCollateralRatioBps must be in [10000, 10000 + bondPercent * 100]");
        }
        if (p.originationFeeBps > 10000) revert InvalidParameters("originationFeeBps must not exceed 10000");
        if (p.interestBps > 10000) revert InvalidParameters("interestBps must not exceed 10000");
        if (p.blocksPerYear == 0) revert InvalidParameters("blocksPerYear must be positive");
        if (p.lenderBtcPubkey == bytes32(0)) revert InvalidParameters("lenderBtcPubkey must be set");
    }
}
