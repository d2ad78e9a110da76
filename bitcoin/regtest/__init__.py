"""Embedded regtest node validated by Bitcoin Core's consensus library (py-bitcoinkernel).

Run it with `python -m bitcoin.regtest --datadir DIR --port P` or `python manage.py btcnode`; talk to it with
`bitcoin.rpc.BitcoinRPC` exactly as to a real bitcoind.
"""
