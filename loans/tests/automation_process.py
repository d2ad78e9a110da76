"""One pass of the lender's automation in a process of its own that dies (``os._exit``) at the submit step:
``after`` the node has the transaction (before anything of the outcome is recorded), or ``before`` it (signed and
recorded only). Run as ``python -m loans.tests.automation_process after|before`` with the test's database and nodes
in the environment."""

from __future__ import annotations

import os
import sys


def main(when: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loanproject.settings")
    import django

    django.setup()
    import evm.client

    original = evm.client._submit

    def submit_and_die(w3, signed_tx: bytes) -> bytes:
        if when == "before":
            os._exit(17)
        tx_hash = original(w3, signed_tx)
        os._exit(17)
        return tx_hash  # pragma: no cover

    evm.client._submit = submit_and_die
    from loans.services.automation import automation_run

    print(automation_run())


if __name__ == "__main__":
    main(sys.argv[1])
