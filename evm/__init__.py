"""The EVM side of the loans: contract artifacts, parameters, the typed client, events, deployment.

No ORM here (a Django app only for `manage.py deploy_contracts`). Entry points:

- `evm.connection.connect(url, expected_chain_id=, timeout=)` -> Web3 (refuses another chain)
- `evm.client.LoanContractClient(w3, loan_address, ether_swap_address)`: one method per contract call returning a
  `PreparedTransaction`; `.send(prepared, account)` for server-held keys; reads `get_loan`, `parameters`, ...
- `evm.events.fetch_events(w3, addresses, from_block, to_block, chunk_size)` -> typed events in chain order
- `evm.parameters.ProtocolParameters`: defaults, the contract's rules, repayment/bond/deadline maths, accept cutoff
- `evm.terms.BorrowerTerms` / `check_loan_terms`: what the borrower asked for, checked against a loan's snapshot
- `evm.deploy.deploy_contracts(w3, account, parameters)` -> `Deployment`; `load_deployment(path)`
- `evm.errors`: `ContractRevert` (decoded custom errors) and the other exceptions
"""
