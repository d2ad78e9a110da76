// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title EtherSwap
/// @notice Hash-time-locked vault for native coin (rBTC), in the style of Boltz's EtherSwap.
/// A lock is identified by keccak256(abi.encodePacked(preimageHash, amount, claimAddress, refundAddress, timelock)).
/// `claim` pays `claimAddress` when given the 32-byte preimage with sha256(preimage) == preimageHash; `refund` pays
/// `refundAddress` from block `timelock` on. Only the linked loan contract may lock, claim or refund, so every
/// lock belongs to a loan and the loan contract enforces who may act and until when.
/// @dev Built for evmVersion istanbul (Rootstock): no PUSH0, no transient storage, no MCOPY.
contract EtherSwap {
    /// @notice The account that deployed this vault; the only one that may link it, once.
    address public immutable deployer;

    /// @dev The loan contract allowed to operate this vault (zero until linked); see `loanContract()`.
    address private _loanContract;

    /// @notice Open locks by their hash (see `hashValues`).
    mapping(bytes32 => bool) public swaps;

    event LoanContractSet(address loanContract);
    event Lockup(
        bytes32 indexed preimageHash,
        uint256 amount,
        address claimAddress,
        address indexed refundAddress,
        uint256 timelock
    );
    event Claim(bytes32 indexed preimageHash, bytes32 preimage);
    event Refund(bytes32 indexed preimageHash);

    error NotLoanContract(address caller);
    error SwapNotFound(bytes32 swapHash);
    error SwapExists(bytes32 swapHash);
    error TimelockNotReached(uint256 timelock);
    error ZeroAmount();
    error AlreadyLinked();
    error NotDeployer(address caller);
    error ZeroAddress();
    error PayoutFailed(address to, uint256 amount);

    modifier onlyLoanContract() {
        if (msg.sender != _loanContract || msg.sender == address(0)) revert NotLoanContract(msg.sender);
        _;
    }

    constructor() {
        deployer = msg.sender;
    }

    /// @notice Link the loan contract. Deployer only, exactly once.
    function setLoanContract(address loanContract) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (_loanContract != address(0)) revert AlreadyLinked();
        if (loanContract == address(0)) revert ZeroAddress();
        _loanContract = loanContract;
        emit LoanContractSet(loanContract);
    }

    /// @notice The loan contract allowed to operate this vault (zero until linked).
    function loanContract() external view returns (address) {
        return _loanContract;
    }

    /// @notice Lock msg.value under the given terms.
    function lock(bytes32 preimageHash, address claimAddress, address refundAddress, uint256 timelock)
        external
        payable
        onlyLoanContract
    {
        if (msg.value == 0) revert ZeroAmount();
        bytes32 swapHash = hashValues(preimageHash, msg.value, claimAddress, refundAddress, timelock);
        if (swaps[swapHash]) revert SwapExists(swapHash);
        swaps[swapHash] = true;
        emit Lockup(preimageHash, msg.value, claimAddress, refundAddress, timelock);
    }

    /// @notice Pay a lock to its claim address. The lock is found by sha256 over exactly the 32 preimage bytes.
    function claim(bytes32 preimage, uint256 amount, address claimAddress, address refundAddress, uint256 timelock)
        external
        onlyLoanContract
    {
        bytes32 preimageHash = sha256(abi.encodePacked(preimage));
        bytes32 swapHash = hashValues(preimageHash, amount, claimAddress, refundAddress, timelock);
        if (!swaps[swapHash]) revert SwapNotFound(swapHash);
        delete swaps[swapHash];
        emit Claim(preimageHash, preimage);
        _pay(claimAddress, amount);
    }

    /// @notice Pay a lock back to its refund address, from block `timelock` on.
    function refund(bytes32 preimageHash, uint256 amount, address claimAddress, address refundAddress, uint256 timelock)
        external
        onlyLoanContract
    {
        if (block.number < timelock) revert TimelockNotReached(timelock);
        bytes32 swapHash = hashValues(preimageHash, amount, claimAddress, refundAddress, timelock);
        if (!swaps[swapHash]) revert SwapNotFound(swapHash);
        delete swaps[swapHash];
        emit Refund(preimageHash);
        _pay(refundAddress, amount);
    }

    function hashValues(
        bytes32 preimageHash,
        uint256 amount,
        address claimAddress,
        address refundAddress,
        uint256 timelock
    ) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(preimageHash, amount, claimAddress, refundAddress, timelock));
    }

    function _pay(address to, uint256 amount) private {
        (bool ok, ) = payable(to).call{value: amount}("");
        if (!ok) revert PayoutFailed(to, amount);
    }
}
