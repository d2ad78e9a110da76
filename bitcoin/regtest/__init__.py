"""Embedded regtest node validated by Bitcoin Core's consensus library (py-bitcoinkernel).

Run it with `python -m bitcoin.regtest --datadir DIR --port P` (`--port 0` picks a free port and prints it on the
ready line) or `python manage.py btcnode`; talk to it with `bitcoin.rpc.BitcoinRPC` exactly as to a bitcoind.
Stop it with SIGTERM/SIGINT or the `stop` RPC: the kernel then flushes and the indexes are snapshotted. After a
crash the kernel reindexes from its block files on the next start.

RPC methods (Bitcoin Core's names, parameters, results and error codes):
  chain      getblockchaininfo getblockcount getbestblockhash getblockhash getblock(0/1/2) getblockheader
  txs        getrawtransaction(verbose, blockhash) gettxout(include_mempool) scantxoutset(start, addr()/raw())
  mempool    sendrawtransaction(maxfeerate) testmempoolaccept(packages) getrawmempool(verbose) getmempoolentry
             estimatesmartfee
  mining     generatetoaddress generateblock(output, [hex|txid], submit) submitblock
  faucet     sendtoaddress getnewaddress getbalance (one node key; coinbase outputs mined to it fund payments)
  misc       getnetworkinfo uptime help stop
`generatetoaddress`, `generateblock` and `sendtoaddress` also accept `raw(HEX)` / `addr(ADDRESS)` descriptors.

Known differences from Bitcoin Core:
* Script failures read `mandatory-script-verify-flag-failed (Script evaluation failed, input N)`: the kernel
  checks consensus flags only and does not say which rule failed (Core names the script error, and applies
  extra policy flags, reported as `non-mandatory-script-verify-flag (...)`).
* Replacement is Core 28's full RBF (no BIP-125 signalling needed): a conflicting transaction replaces its
  conflicts and their descendants when it pays a higher fee rate than each conflict and at least their fees plus
  1 sat/vB of its own size, adds no unconfirmed input and evicts at most 100; else `insufficient fee` (or
  `replacement-adds-unconfirmed`, `too many potential replacements`, `bad-txns-spends-conflicting-tx`). No
  package relay or package RBF; CPFP works because blocks take the whole mempool in arrival order.
* `estimatesmartfee` is the median fee rate of the last blocks' transactions (Core's error when there are none).
* Standardness covers version, scriptSig, output types, OP_RETURN (83 bytes, one), dust and minimum size; bare
  multisig outputs and witness-stack policy limits are not checked.
* Unknown transactions by txid need no `-txindex` here (the node always keeps a tx index).
"""
