"""Artifact loading: the real build passes; broken or stale builds fail with a message naming the problem."""

from __future__ import annotations

import json

import pytest

from evm.artifacts import ETHER_SWAP, LOAN, REQUIRED_INTERFACE, load_artifact, load_artifacts
from evm.errors import ArtifactError


def test_the_committed_artifacts_carry_the_whole_interface():
    artifacts = load_artifacts()
    assert artifacts.loan.name == LOAN and artifacts.ether_swap.name == ETHER_SWAP
    for artifact in (artifacts.loan, artifacts.ether_swap):
        assert len(artifact.bytecode) > 100
        assert len(artifact.bytecode_sha256) == 64
        for kind, names in REQUIRED_INTERFACE[artifact.name].items():
            assert names <= {e["name"] for e in artifact.entries(kind)}
    assert load_artifacts() is artifacts  # cached


def write(tmp_path, name, document):
    (tmp_path / f"{name}.json").write_text(document if isinstance(document, str) else json.dumps(document))


@pytest.fixture
def real():
    return json.loads(load_artifacts().loan.path.read_text())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "not json", "is not readable JSON"),
        (lambda d: [], "expected a JSON object"),
        (lambda d: d | {"abi": "x"}, "'abi' must be a list"),
        (lambda d: d | {"bytecode": None}, "'bytecode' must be a hex string"),
        (lambda d: d | {"bytecode": "0x"}, "'bytecode' is empty"),
        (lambda d: d | {"bytecode": "0x60__$lib$__"}, "not hex"),
        (lambda d: d | {"abi": [e for e in d["abi"] if e.get("name") != "markAsDefaulted"]},
         "lacks function\\(s\\) markAsDefaulted"),
        (lambda d: d | {"abi": [e for e in d["abi"] if e.get("name") not in {"TooLate", "TooEarly"}]},
         "lacks error\\(s\\) TooEarly, TooLate"),
    ],
)  # fmt: skip
def test_broken_artifacts_are_refused_with_the_reason(tmp_path, real, mutate, message):
    write(tmp_path, LOAN, mutate(real))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(LOAN, tmp_path)


def test_missing_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist: compile the contracts"):
        load_artifacts(tmp_path)


def test_nested_bytecode_object_is_accepted(tmp_path, real):
    write(tmp_path, LOAN, real | {"bytecode": {"object": real["bytecode"]}})
    assert load_artifact(LOAN, tmp_path).bytecode == load_artifacts().loan.bytecode
