"""BIP-380 checksums and the loan outputs' descriptors."""

from __future__ import annotations

import pytest

from bitcoin.addresses import address_to_script_pubkey
from bitcoin.descriptors import (
    add_checksum,
    descriptor_checksum,
    loan_output_descriptors,
    parse_descriptor,
    split_checksum,
)
from bitcoin.errors import DescriptorError
from bitcoin.tests.loan_vectors import (
    BORROWER_HASH,
    BORROWER_XONLY,
    COLLATERAL_ADDRESS_REGTEST,
    COLLATERAL_DESCRIPTOR_CHECKSUM,
    ESCROW_ADDRESS_REGTEST,
    ESCROW_DESCRIPTOR_CHECKSUM,
    LENDER_HASH,
    LENDER_XONLY,
    vector_facts,
)

NUMS = "50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0"


def test_bip380_valid_checksum() -> None:
    assert add_checksum("raw(deadbeef)") == "raw(deadbeef)#89f8spxm"
    assert split_checksum("raw(deadbeef)#89f8spxm") == "raw(deadbeef)"


def test_checksum_of_a_wallet_exported_descriptor() -> None:
    descriptor = (
        "wsh(sortedmulti(2,[02e8bff2/48h/1h/0h/2h]tpubDESmyzX6RMHRHvzxgLVXymd193CSYYT6C9M9wa4XK649tbAy2WeEvkPwBgo"
        "C7i76MypQxpuruUazQjqibbCogTZuENJX6YiuZ5Fy8sf7GNi/<0;1>/*,[8cb36b38/48h/1h/0h/2h]tpubDESTVwqbbaSoN2mPq7tc"
        "WkPBpRBkaEADrUzUhRTVnNef6oVn6w2PHL4zoUjUAJSPLJQRBetkgX4sDRcoaCyFHxqHGyWyaiV8REKDkh7zQac/<0;1>/*,[73c5da0a"
        "/48h/1h/0h/2h]tpubDFH9dgzveyD8zTbPUFuLrGmCydNvxehyNdUXKJAQN8x4aZ4j6UZqGfnqFrD4NqyaTVGKbvEW54tsvPTK2UoSbCC"
        "1PJY8iCNiwTL3RWZEheQ/<0;1>/*))"
    )
    assert descriptor_checksum(descriptor) == "jpxgnm0a"


@pytest.mark.parametrize(
    "text",
    [
        "raw(deadbeef)#",  # missing checksum
        "raw(deadbeef)#89f8spxmx",  # too long
        "raw(deadbeef)#89f8spx",  # too short
        "raw(deedbeef)#89f8spxm",  # error in payload
        "raw(deadbeef)##9f8spxm",  # error in checksum
        "raw(Ü)#00000000",  # invalid characters in payload
        "raw(deadbeef)",  # checksum required
    ],
)
def test_bip380_invalid_checksums(text: str) -> None:
    with pytest.raises(DescriptorError):
        split_checksum(text)


@pytest.mark.parametrize("network", ["mainnet", "testnet", "signet", "regtest"])
def test_loan_descriptors_describe_exactly_the_outputs(network: str) -> None:
    facts = vector_facts()
    for output in (facts.escrow, facts.collateral):
        descriptors = loan_output_descriptors(output)
        assert descriptors.tree_descriptor.startswith(f"tr({output.internal_key.hex()},{{and_v(v:")
        assert descriptors.watch_descriptor.startswith(f"rawtr({output.output_key.hex()})#")
        assert parse_descriptor(descriptors.tree_descriptor, network) == output.script_pubkey
        assert parse_descriptor(descriptors.watch_descriptor, network) == output.script_pubkey
        assert parse_descriptor(add_checksum(f"addr({output.address(network)})"), network) == output.script_pubkey


def test_protocol_vector_descriptors_and_checksums() -> None:
    """PROTOCOL.md's test vector, character for character (BDK derives the same addresses from these:
    test_third_party_signers.py)."""
    facts = vector_facts()
    h = "50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0"
    escrow = loan_output_descriptors(facts.escrow).tree_descriptor
    collateral = loan_output_descriptors(facts.collateral).tree_descriptor
    assert escrow == (
        f"tr({h},{{and_v(v:pk({BORROWER_XONLY}),older(100)),"
        f"and_v(v:sha256({BORROWER_HASH}),multi_a(2,{LENDER_XONLY},{BORROWER_XONLY}))}})#{ESCROW_DESCRIPTOR_CHECKSUM}"
    )
    assert collateral == (
        f"tr({h},{{and_v(v:pk({LENDER_XONLY}),older(30000)),"
        f"and_v(v:sha256({LENDER_HASH}),pk({BORROWER_XONLY}))}})#{COLLATERAL_DESCRIPTOR_CHECKSUM}"
    )
    assert parse_descriptor(escrow, "regtest") == address_to_script_pubkey(ESCROW_ADDRESS_REGTEST, "regtest")
    assert parse_descriptor(collateral, "regtest") == address_to_script_pubkey(COLLATERAL_ADDRESS_REGTEST, "regtest")


def test_swapping_leaves_gives_the_same_output() -> None:
    """BIP-341 sorts branch children, so leaf order in tr() does not change the output."""
    output = vector_facts().escrow
    assert output.miniscripts is not None
    swapped = add_checksum(f"tr({output.internal_key.hex()},{{{output.miniscripts[1]},{output.miniscripts[0]}}})")
    assert parse_descriptor(swapped, "regtest") == output.script_pubkey


@pytest.mark.parametrize(
    "body",
    [
        "tr(00,{older(5),older(6)})",  # bad key
        f"tr({NUMS},{{older(5)}})",  # one-child branch
        f"tr({NUMS},{{pk(51),older(6)}})",  # bad key in a leaf
        f"tr({NUMS},{{rawleaf(51),older(6)}})",  # rawleaf() is no miniscript: nothing imports it
        f"tr({NUMS},{{older(5),older(6)}}",
        "wpkh(02aa)",
        "addr(bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4)",  # mainnet address on regtest
    ],
)
def test_malformed_descriptors_are_refused(body: str) -> None:
    with pytest.raises(DescriptorError):
        parse_descriptor(add_checksum(body), "regtest")
