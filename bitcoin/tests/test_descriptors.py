"""BIP-380 checksums and the loan outputs' descriptors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitcoin.descriptors import (
    add_checksum,
    descriptor_checksum,
    loan_output_descriptors,
    parse_descriptor,
    split_checksum,
)
from bitcoin.errors import DescriptorError
from bitcoin.tests.loan_vectors import vector_scripts

VECTORS = json.loads((Path(__file__).parent / "data" / "bip341_wallet_vectors.json").read_text())


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
    scripts = vector_scripts()
    for output in (scripts.escrow, scripts.collateral):
        descriptors = loan_output_descriptors(output)
        assert descriptors.tree_descriptor.startswith(f"tr({output.internal_key.hex()},{{rawleaf(")
        assert descriptors.watch_descriptor.startswith(f"rawtr({output.output_key.hex()})#")
        assert parse_descriptor(descriptors.tree_descriptor, network) == output.script_pubkey
        assert parse_descriptor(descriptors.watch_descriptor, network) == output.script_pubkey
        assert parse_descriptor(add_checksum(f"addr({output.address(network)})"), network) == output.script_pubkey


def test_swapping_leaves_gives_the_same_output() -> None:
    """BIP-341 sorts branch children, so leaf order in tr() does not change the output."""
    output = vector_scripts().escrow
    swapped = add_checksum(
        f"tr({output.internal_key.hex()},{{rawleaf({output.leaves[1].hex()}),rawleaf({output.leaves[0].hex()})}})"
    )
    assert parse_descriptor(swapped, "regtest") == output.script_pubkey


def _tree_expression(tree: object) -> str:
    if isinstance(tree, dict):
        assert tree["leafVersion"] == 0xC0
        return f"rawleaf({tree['script']})"
    return "{" + _tree_expression(tree[0]) + "," + _tree_expression(tree[1]) + "}"  # type: ignore[index]


@pytest.mark.parametrize(
    "case",
    [c for c in VECTORS["scriptPubKey"] if "250" not in json.dumps(c["scriptTree"])],
    ids=lambda case: case["internalPubkey"][:8],
)
def test_nested_bip341_trees_through_the_parser(case: dict) -> None:
    descriptor = add_checksum(f"tr({case['internalPubkey']},{_tree_expression(case['scriptTree'])})")
    assert parse_descriptor(descriptor, "mainnet").hex() == case["scriptPubKey"]


@pytest.mark.parametrize(
    "body",
    [
        "tr(00,{rawleaf(51),rawleaf(52)})",  # bad key
        "tr(50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6,{rawleaf(51)})",  # one-child branch
        "tr(50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6,{pk(51),rawleaf(52)})",  # unsupported
        "tr(50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6,{rawleaf(zz),rawleaf(52)})",
        "tr(50929b74c1a04954b78b4b60c595c211f8b853e6e84bfa2be95712a7b0dd59e6,{rawleaf(51),rawleaf(52)}",
        "wpkh(02aa)",
        "addr(bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4)",  # mainnet address on regtest
    ],
)
def test_malformed_descriptors_are_refused(body: str) -> None:
    with pytest.raises(DescriptorError):
        parse_descriptor(add_checksum(body), "regtest")
