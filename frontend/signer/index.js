// The borrower's signer in the browser: the loan's Bitcoin transactions built, checked and signed from the loan
// file alone (the JSON of `GET /api/v1/loans/{id}/loan-file/`, `bitcoin.loan.LoanFacts.to_json_dict`).
//
// Bundled by `node frontend/build.js` into static/loans/vendor/signer.js (an ES module); the pages import it.
// Every function takes and returns plain JSON values: hex strings, base64 PSBTs, amounts as decimal strings of
// integers (sats), fee rates as exact text ("1.5", or "n/d" where no finite decimal is exact).
//
// Design (why the builders are here and not only on the server): the builders are small and fully determined by
// the loan's facts (one input, fixed output order, fee = ceil(rate x exact final vsize), change above dust), so
// this module ports bitcoin/transactions.py exactly instead of asking the server for unsigned PSBTs. The borrower
// then needs nothing from the server to build TX_1 and the TX_release / TX_exit ladders, and the server never
// chooses what the borrower signs. The Python tests (loans/tests/test_browser_signer.py) hold the port to the
// Python builders byte for byte (same unsigned transactions and fees), and run the Python verifier
// (bitcoin.presignature) over what this module signs.
//
// PROTOCOL.md attack 16: `signPsbt` signs nothing that `checkLoanTransaction` (the port of
// bitcoin.presignature.check_borrower_transaction) refuses, and it signs the sighash it computes itself from the
// loan's facts (derived prevout, derived leaf), never from what the PSBT claims. Refusals throw a
// `SignerRefusal` whose `reason` is the Python verifier's reason code.
//
// @scure/btc-signer (pinned in package.json) reads and writes PSBTs and decodes addresses; @noble/curves signs
// (BIP-340, odd-Y keys included). Scripts, taproot trees, sighashes, sizes and fees are computed here so each
// step is the same arithmetic as the Python side.

import { Address, OutScript, RawTx, Transaction, utils as btcUtils } from '@scure/btc-signer';
import { base64, hex } from '@scure/base';
import { schnorr } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { ripemd160 } from '@noble/hashes/legacy.js';

export const LOAN_FILE_FORMAT = 'btc-collateral-loan/1';
export const TX_VERSION = 2;
export const SEQUENCE_RBF_NO_LOCK = 0xfffffffd;
export const FEE_OUTPUT_INDEX = 0;
export const COLLATERAL_OUTPUT_INDEX = 1;
export const CHANGE_OUTPUT_INDEX = 2;
export const TIMELOCK_LEAF = 0;
export const HASHLOCK_LEAF = 1;
const TAPSCRIPT_LEAF_VERSION = 0xc0;
const BPS = 10000n;
const MAX_MONEY_SATS = 21000000n * 100000000n;
const MAX_SANE_FEE_RATE = 10000n;
const DUST_RELAY_FEE_SAT_PER_KVB = 3000n;
// BIP-341's NUMS point H: the internal key of every loan output (the key path is unspendable).
const NUMS_H = hex.decode('50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0');
const CURVE_ORDER = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

const NETWORKS = {
  mainnet: { bech32: 'bc', pubKeyHash: 0x00, scriptHash: 0x05, wif: 0x80 },
  testnet: { bech32: 'tb', pubKeyHash: 0x6f, scriptHash: 0xc4, wif: 0xef },
  signet: { bech32: 'tb', pubKeyHash: 0x6f, scriptHash: 0xc4, wif: 0xef },
  regtest: { bech32: 'bcrt', pubKeyHash: 0x6f, scriptHash: 0xc4, wif: 0xef },
};

export const KINDS = Object.freeze({ TX_1: 'tx_1', TX_EXIT: 'tx_exit', TX_RELEASE: 'tx_release' });

/** A refusal with the Python verifier's reason code (bitcoin.presignature). */
export class SignerRefusal extends Error {
  constructor(reason, message) {
    super(message);
    this.name = 'SignerRefusal';
    this.reason = reason;
  }
}

/** The caller's own data is wrong (a loan file that does not hold together, a bad key or fee rate). */
export class SignerInputError extends Error {
  constructor(message) {
    super(message);
    this.name = 'SignerInputError';
    this.reason = 'invalid_input';
  }
}

const refuse = (reason, message) => new SignerRefusal(reason, message);
const invalid = (message) => new SignerInputError(message);

// -- bytes -----------------------------------------------------------------------------------------------------

const concat = (...parts) => btcUtils.concatBytes(...parts);
const equal = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i]);

function u32le(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

function u64le(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
}

function compactSize(n) {
  if (n < 0xfd) return Uint8Array.of(n);
  if (n <= 0xffff) return Uint8Array.of(0xfd, n & 0xff, n >> 8);
  return concat(Uint8Array.of(0xfe), u32le(n));
}

const pushBytes = (data) => concat(compactSize(data.length), data);

function taggedHash(tag, ...messages) {
  const tagHash = sha256(new TextEncoder().encode(tag));
  return sha256(concat(tagHash, tagHash, ...messages));
}

function parseHex(text, bytes, name) {
  if (typeof text !== 'string' || text.length !== bytes * 2 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw invalid(`${name} must be ${bytes * 2} hex characters`);
  }
  return hex.decode(text.toLowerCase());
}

function parseXonly(text, name) {
  const raw = parseHex(text, 32, name);
  try {
    schnorr.utils.lift_x(BigInt('0x' + hex.encode(raw)));
  } catch {
    throw invalid(`${name} is not a valid x-only public key`);
  }
  return raw;
}

function parsePrivateKey(text) {
  const raw = parseHex(text, 32, 'private key');
  const scalar = BigInt('0x' + text);
  if (scalar === 0n || scalar >= CURVE_ORDER) throw invalid('private key is out of range');
  return raw;
}

// -- exact fee rates (sat/vB as fractions of BigInts) ------------------------------------------------------------

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

function fraction(n, d) {
  const g = gcd(n < 0n ? -n : n, d);
  return { n: n / g, d: d / g };
}

const lessThan = (a, b) => a.n * b.d < b.n * a.d;

/** A fee rate from an integer, a decimal string ("1.5") or exact text ("n/d"); 0 < rate <= 10000. */
export function parseFeeRate(value, name = 'fee rate') {
  let rate;
  const text = typeof value === 'number' ? String(value) : value;
  if (typeof text !== 'string') throw invalid(`${name} must be a number or decimal string`);
  const ratio = /^\s*(\d+)\/(\d+)\s*$/.exec(text);
  const decimal = /^\s*(\d+)(?:\.(\d+))?\s*$/.exec(text);
  if (ratio && BigInt(ratio[2]) !== 0n) {
    rate = fraction(BigInt(ratio[1]), BigInt(ratio[2]));
  } else if (decimal) {
    const digits = decimal[2] || '';
    rate = fraction(BigInt(decimal[1] + digits), 10n ** BigInt(digits.length));
  } else {
    throw invalid(`${name}: invalid fee rate ${JSON.stringify(value)}`);
  }
  if (rate.n <= 0n) throw invalid(`${name} must be positive`);
  if (rate.n > MAX_SANE_FEE_RATE * rate.d) throw invalid(`${name} is above the sanity cap of 10000 sat/vB`);
  return rate;
}

/** A fee rate as exact text, like bitcoin.loan.fee_rate_text: a decimal when exact, else "n/d". */
export function feeRateText(rate) {
  let d = rate.d;
  let twos = 0n;
  let fives = 0n;
  while (d % 2n === 0n) [d, twos] = [d / 2n, twos + 1n];
  while (d % 5n === 0n) [d, fives] = [d / 5n, fives + 1n];
  if (d !== 1n) return `${rate.n}/${rate.d}`;
  const places = twos > fives ? twos : fives;
  const scaled = (rate.n * 10n ** places) / rate.d;
  if (places === 0n) return scaled.toString();
  const digits = scaled.toString().padStart(Number(places) + 1, '0');
  const whole = digits.slice(0, digits.length - Number(places));
  const frac = digits.slice(digits.length - Number(places)).replace(/0+$/, '');
  return frac ? `${whole}.${frac}` : whole;
}

/** Smallest whole-satoshi fee paying at least ``rate`` for ``vsize`` vbytes. */
const feeForVsize = (vsize, rate) => (rate.n * BigInt(vsize) + rate.d - 1n) / rate.d;

/** Bitcoin Core's GetDustThreshold at the default dust relay fee (bitcoin/fees.py). */
export function dustThreshold(script) {
  if (script[0] === 0x6a) return 0n;
  const outputSize = 8 + compactSize(script.length).length + script.length;
  const size = script.length;
  const witness = size >= 4 && size <= 42 && (script[0] === 0 || (script[0] >= 0x51 && script[0] <= 0x60)) &&
    script[1] + 2 === size;
  const spendSize = witness ? 32 + 4 + 1 + Math.floor(107 / 4) + 4 : 32 + 4 + 1 + 107 + 4;
  return (DUST_RELAY_FEE_SAT_PER_KVB * BigInt(outputSize + spendSize)) / 1000n;
}

// -- scripts and the two loan outputs (bitcoin/scripts.py, compiled miniscript) ----------------------------------

function pushData(data) {
  if (data.length < 0x4c) return concat(Uint8Array.of(data.length), data);
  throw invalid('push too long');
}

function pushNumber(n) {
  if (n >= 1 && n <= 16) return Uint8Array.of(0x50 + n);
  const bytes = [];
  let value = n;
  while (value > 0) {
    bytes.push(value & 0xff);
    value = Math.floor(value / 256);
  }
  if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
  return pushData(Uint8Array.from(bytes));
}

const OP = { CHECKSIGVERIFY: 0xad, CSV: 0xb2, SIZE: 0x82, EQUALVERIFY: 0x88, SHA256: 0xa8, CHECKSIG: 0xac,
  CHECKSIGADD: 0xba, OP_2: 0x52, NUMEQUAL: 0x9c };

// and_v(v:pk(K),older(t))
const timelockLeaf = (key, blocks) => concat(pushData(key), Uint8Array.of(OP.CHECKSIGVERIFY), pushNumber(blocks),
  Uint8Array.of(OP.CSV));
// v:sha256(h): OP_SIZE <32> OP_EQUALVERIFY OP_SHA256 <h> OP_EQUALVERIFY
const hashCheck = (hash) => concat(Uint8Array.of(OP.SIZE, 0x01, 0x20, OP.EQUALVERIFY, OP.SHA256), pushData(hash),
  Uint8Array.of(OP.EQUALVERIFY));

const tapLeafHash = (script) => taggedHash('TapLeaf', Uint8Array.of(TAPSCRIPT_LEAF_VERSION), pushBytes(script));

function twoLeafOutput(leaves) {
  const leafHashes = leaves.map(tapLeafHash);
  const [first, second] = [...leafHashes].sort((a, b) => btcUtils.compareBytes(a, b));
  const merkleRoot = taggedHash('TapBranch', first, second);
  const [outputKey, parity] = btcUtils.taprootTweakPubkey(NUMS_H, merkleRoot);
  return {
    leaves,
    leafHashes,
    merkleRoot,
    outputKey,
    script: concat(Uint8Array.of(0x51, 0x20), outputKey),
    controlBlock: (index) => concat(Uint8Array.of(TAPSCRIPT_LEAF_VERSION | parity), NUMS_H, leafHashes[1 - index]),
  };
}

function escrowOutput(f) {
  return twoLeafOutput([
    timelockLeaf(f.xB, f.t0),
    concat(hashCheck(f.hB), pushData(f.xL), Uint8Array.of(OP.CHECKSIG), pushData(f.xB),
      Uint8Array.of(OP.CHECKSIGADD, OP.OP_2, OP.NUMEQUAL)),
  ]);
}

function collateralOutput(f) {
  return twoLeafOutput([
    timelockLeaf(f.xL, f.t1),
    concat(hashCheck(f.hL), pushData(f.xB), Uint8Array.of(OP.CHECKSIG)),
  ]);
}

function addressScript(address, network, name) {
  if (typeof address !== 'string') throw invalid(`${name} must be an address string`);
  try {
    return OutScript.encode(Address(NETWORKS[network]).decode(address));
  } catch (error) {
    throw invalid(`${name} ${JSON.stringify(address)} is not a ${network} address: ${error.message}`);
  }
}

function scriptAddress(script, network) {
  try {
    return Address(NETWORKS[network]).encode(OutScript.decode(script));
  } catch {
    return null;
  }
}

// -- the loan file -------------------------------------------------------------------------------------------------

function sats(value, name, optional = false) {
  if (value === null && optional) return null;
  if (!Number.isSafeInteger(value) || value <= 0 || BigInt(value) > MAX_MONEY_SATS) {
    throw invalid(`${name} must be a positive integer number of satoshis`);
  }
  return BigInt(value);
}

function integer(value, name, low, high) {
  if (!Number.isSafeInteger(value) || value < low || value > high) {
    throw invalid(`${name} must be an integer between ${low} and ${high}`);
  }
  return value;
}

function parseOutpoint(text) {
  const match = typeof text === 'string' && /^([0-9a-fA-F]{64}):(\d+)$/.exec(text.trim());
  if (!match || Number(match[2]) > 0xffffffff) throw invalid('escrow_outpoint must be TXID:VOUT');
  return { txid: match[1].toLowerCase(), vout: Number(match[2]) };
}

/**
 * The loan's facts from its loan file (object or JSON text), with the escrow and collateral outputs derived from
 * the keys, hashes and timelocks and compared with the file's own addresses: a file whose facts and addresses
 * disagree is refused (SignerInputError), as LoanFacts.from_json_dict does.
 */
export function loadLoanFile(loanFile) {
  const data = typeof loanFile === 'string' ? JSON.parse(loanFile) : loanFile;
  if (!data || typeof data !== 'object' || data.format !== LOAN_FILE_FORMAT) {
    throw invalid(`not a loan file of format ${LOAN_FILE_FORMAT}`);
  }
  const network = data.network;
  if (!Object.hasOwn(NETWORKS, network)) throw invalid(`unknown network ${JSON.stringify(network)}`);
  const f = {
    network,
    xB: parseXonly(data.borrower_btc_pubkey, 'borrower_btc_pubkey'),
    xL: parseXonly(data.lender_btc_pubkey, 'lender_btc_pubkey'),
    hB: parseHex(data.borrower_hash, 32, 'borrower_hash'),
    hL: data.lender_hash === null ? null : parseHex(data.lender_hash, 32, 'lender_hash'),
    t0: integer(data.escrow_timelock_btc_blocks, 'escrow_timelock_btc_blocks', 1, 0xffff),
    t1: integer(data.collateral_timelock_btc_blocks, 'collateral_timelock_btc_blocks', 1, 0xffff),
    escrowOutpoint: data.escrow_outpoint === null ? null : parseOutpoint(data.escrow_outpoint),
    escrowSats: sats(data.escrow_sats, 'escrow_sats', true),
    loanSats: sats(data.loan_amount_sats, 'loan_amount_sats'),
    ratioBps: BigInt(integer(data.min_collateral_ratio_bps, 'min_collateral_ratio_bps', 10000, 20000)),
    capSats: sats(data.collateral_cap_sats, 'collateral_cap_sats'),
    feeBps: BigInt(integer(data.origination_fee_bps, 'origination_fee_bps', 0, 10000)),
    lenderPayout: addressScript(data.lender_payout_address, network, 'lender_payout_address'),
    borrowerPayout: addressScript(data.borrower_payout_address, network, 'borrower_payout_address'),
    minRate: parseFeeRate(data.min_fee_rate_sat_vb, 'min_fee_rate_sat_vb'),
    maxRate: parseFeeRate(data.max_fee_rate_sat_vb, 'max_fee_rate_sat_vb'),
  };
  if (equal(f.xB, f.xL)) throw invalid("the borrower's and the lender's Bitcoin keys must differ");
  if ((f.escrowOutpoint === null) !== (f.escrowSats === null)) {
    throw invalid('the escrow outpoint and its value come together');
  }
  if (lessThan(f.maxRate, f.minRate)) throw invalid('the minimum fee rate is above the maximum');
  f.collateralSats = (f.loanSats * f.ratioBps + BPS - 1n) / BPS;
  f.originationFeeSats = (f.loanSats * f.feeBps) / BPS;
  if (f.collateralSats > f.capSats) throw invalid('the required collateral is above repayment + bond');
  f.escrow = escrowOutput(f);
  if (!equal(addressScript(data.escrow_address, network, 'escrow_address'), f.escrow.script)) {
    throw invalid("the loan file's escrow address does not match its facts");
  }
  if (f.hL !== null) {
    f.collateral = collateralOutput(f);
    if (!equal(addressScript(data.collateral_address, network, 'collateral_address'), f.collateral.script)) {
      throw invalid("the loan file's collateral address does not match its facts");
    }
  } else if (data.collateral_address !== undefined) {
    throw invalid('a loan file without hL has no collateral address');
  }
  return f;
}

function requireFacts(f, ...names) {
  const missing = names.filter((name) => f[name] === null || f[name] === undefined);
  if (missing.length) throw invalid(`the loan's facts lack ${missing.join(', ')} for this step`);
}

// -- transactions (bitcoin/transactions.py) -------------------------------------------------------------------------

function serializeTx(tx, withWitness = true) {
  const witness = withWitness && tx.inputs.some((input) => input.witness && input.witness.length);
  const parts = [u32le(tx.version)];
  if (witness) parts.push(Uint8Array.of(0, 1));
  parts.push(compactSize(tx.inputs.length));
  for (const input of tx.inputs) {
    parts.push(hex.decode(input.txid).reverse(), u32le(input.vout), pushBytes(input.scriptSig || new Uint8Array()),
      u32le(input.sequence));
  }
  parts.push(compactSize(tx.outputs.length));
  for (const output of tx.outputs) parts.push(u64le(output.value), pushBytes(output.script));
  if (witness) {
    for (const input of tx.inputs) {
      const items = input.witness || [];
      parts.push(compactSize(items.length), ...items.map(pushBytes));
    }
  }
  parts.push(u32le(tx.locktime));
  return concat(...parts);
}

const txid = (tx) => hex.encode(sha256(sha256(serializeTx(tx, false))).reverse());

function vsize(tx) {
  const base = serializeTx(tx, false).length;
  const total = serializeTx(tx, true).length;
  return Math.ceil((3 * base + total) / 4);
}

const singleInputTx = (outpoint, sequence, outputs) => ({
  version: TX_VERSION,
  inputs: [{ txid: outpoint.txid, vout: outpoint.vout, sequence, scriptSig: new Uint8Array(), witness: [] }],
  outputs,
  locktime: 0,
});

/** What a loan transaction spends and how (PreparedSpend): prevout, tree, leaf, signers, preimage hash. */
function prepared(f, kind, tx) {
  if (kind === KINDS.TX_1) {
    requireFacts(f, 'escrowOutpoint', 'hL');
    return { kind, tx, prevout: { value: f.escrowSats, script: f.escrow.script }, tree: f.escrow,
      leaf: HASHLOCK_LEAF, signers: [f.xB, f.xL], preimageHash: f.hB };
  }
  if (kind === KINDS.TX_EXIT) {
    requireFacts(f, 'escrowOutpoint');
    return { kind, tx, prevout: { value: f.escrowSats, script: f.escrow.script }, tree: f.escrow,
      leaf: TIMELOCK_LEAF, signers: [f.xB], preimageHash: null };
  }
  requireFacts(f, 'hL');
  return { kind, tx, prevout: { value: f.collateralSats, script: f.collateral.script }, tree: f.collateral,
    leaf: HASHLOCK_LEAF, signers: [f.xB], preimageHash: f.hL };
}

const leafScript = (p) => p.tree.leaves[p.leaf];
const leafHash = (p) => p.tree.leafHashes[p.leaf];

/** vsize of the transaction once its witness of the final shape is in place (zeros for signatures, preimage). */
function finalVsize(p) {
  const items = p.signers.map(() => new Uint8Array(64));
  if (p.preimageHash) items.push(new Uint8Array(32));
  items.push(leafScript(p), p.tree.controlBlock(p.leaf));
  return vsize({ ...p.tx, inputs: [{ ...p.tx.inputs[0], witness: items }] });
}

/** BIP-341 script-path SIGHASH_DEFAULT message hash (ext_flag 1, key version 0, no OP_CODESEPARATOR). */
function sighash(p) {
  const { tx, prevout } = p;
  const input = tx.inputs[0];
  const message = concat(
    Uint8Array.of(0x00, 0x00),
    u32le(tx.version),
    u32le(tx.locktime),
    sha256(concat(hex.decode(input.txid).reverse(), u32le(input.vout))),
    sha256(u64le(prevout.value)),
    sha256(pushBytes(prevout.script)),
    sha256(u32le(input.sequence)),
    sha256(concat(...tx.outputs.map((o) => concat(u64le(o.value), pushBytes(o.script))))),
    Uint8Array.of(0x02),
    u32le(0),
    leafHash(p),
    Uint8Array.of(0x00),
    u32le(0xffffffff),
  );
  return taggedHash('TapSighash', message);
}

function checkRateBounds(f, feeRate) {
  const rate = parseFeeRate(feeRate);
  if (lessThan(rate, f.minRate) || lessThan(f.maxRate, rate)) {
    throw invalid(`fee rate ${feeRateText(rate)} sat/vB is outside the loan's bounds ` +
      `[${feeRateText(f.minRate)}, ${feeRateText(f.maxRate)}] sat/vB`);
  }
  return rate;
}

function buildTx1Prepared(f, feeRate) {
  const rate = checkRateBounds(f, feeRate);
  requireFacts(f, 'escrowOutpoint', 'hL');
  const feeOutput = { value: f.originationFeeSats, script: f.lenderPayout };
  if (feeOutput.value < dustThreshold(feeOutput.script)) throw invalid('the origination fee output is dust');
  const collateral = { value: f.collateralSats, script: f.collateral.script };
  const changeScript = f.borrowerPayout;
  const measured = (outputs) =>
    finalVsize(prepared(f, KINDS.TX_1, singleInputTx(f.escrowOutpoint, SEQUENCE_RBF_NO_LOCK, outputs)));
  const remainder = f.escrowSats - feeOutput.value - collateral.value;
  const change = remainder - feeForVsize(measured([feeOutput, collateral, { value: 0n, script: changeScript }]), rate);
  let outputs;
  if (change >= dustThreshold(changeScript)) {
    outputs = [feeOutput, collateral, { value: change, script: changeScript }];
  } else {
    outputs = [feeOutput, collateral];
    const needed = feeForVsize(measured(outputs), rate);
    if (remainder < needed) {
      throw invalid(`an escrow of ${f.escrowSats} sat cannot pay the collateral, the origination fee and a ` +
        `${needed} sat miner fee`);
    }
  }
  const p = prepared(f, KINDS.TX_1, singleInputTx(f.escrowOutpoint, SEQUENCE_RBF_NO_LOCK, outputs));
  p.feeSats = f.escrowSats - outputs.reduce((sum, o) => sum + o.value, 0n);
  if (lessThan(f.maxRate, fraction(p.feeSats, BigInt(finalVsize(p))))) {
    throw invalid("the escrow's sub-dust remainder raises TX_1's fee rate above the loan's maximum");
  }
  return p;
}

function buildSweepPrepared(f, kind, outpoint, feeRate) {
  const rate = checkRateBounds(f, feeRate);
  const sequence = kind === KINDS.TX_EXIT ? f.t0 : SEQUENCE_RBF_NO_LOCK;
  const payoutScript = f.borrowerPayout;
  const shape = prepared(f, kind, singleInputTx(outpoint, sequence, [{ value: 0n, script: payoutScript }]));
  const minerFee = feeForVsize(finalVsize(shape), rate);
  const payout = shape.prevout.value - minerFee;
  if (payout <= 0n) throw invalid(`output of ${shape.prevout.value} sat cannot pay the ${minerFee} sat miner fee`);
  if (payout < dustThreshold(payoutScript)) throw invalid(`payout output of ${payout} sat is dust`);
  const p = prepared(f, kind, singleInputTx(outpoint, sequence, [{ value: payout, script: payoutScript }]));
  p.feeSats = minerFee;
  return p;
}

const collateralOutpoint = (tx1Txid) => ({ txid: parseTxid(tx1Txid), vout: COLLATERAL_OUTPUT_INDEX });

function parseTxid(text) {
  if (typeof text !== 'string' || !/^[0-9a-fA-F]{64}$/.test(text)) throw invalid('txid must be 64 hex characters');
  return text.toLowerCase();
}

// -- PSBTs ----------------------------------------------------------------------------------------------------

const PSBT_OPTIONS = {
  allowUnknownOutputs: true,
  allowUnknownInputs: true,
  disableScriptCheck: true,
  allowUnknown: true,
  allowUnknownVersion: true,
};

/** Unsigned PSBT of a prepared transaction, with the BIP-371 fields bitcoin.psbt.create_psbt writes. */
function createPsbt(p, collateral = null) {
  const tx = new Transaction({ version: p.tx.version, lockTime: p.tx.locktime, ...PSBT_OPTIONS });
  const input = p.tx.inputs[0];
  const fingerprint = (key) => new DataView(ripemd160(sha256(key)).buffer).getUint32(0, false);
  tx.addInput({
    txid: input.txid,
    index: input.vout,
    sequence: input.sequence,
    witnessUtxo: { script: p.prevout.script, amount: p.prevout.value },
    tapLeafScript: [[
      { version: TAPSCRIPT_LEAF_VERSION, internalKey: NUMS_H, merklePath: [p.tree.leafHashes[1 - p.leaf]] },
      concat(leafScript(p), Uint8Array.of(TAPSCRIPT_LEAF_VERSION)),
    ]],
    tapInternalKey: NUMS_H,
    tapMerkleRoot: p.tree.merkleRoot,
    tapBip32Derivation: p.signers.map((key) => [key, { hashes: [leafHash(p)], der: { fingerprint: fingerprint(key),
      path: [] } }]),
  });
  p.tx.outputs.forEach((output, index) => {
    const fields = { script: output.script, amount: output.value };
    if (p.kind === KINDS.TX_1 && index === COLLATERAL_OUTPUT_INDEX) {
      fields.tapInternalKey = NUMS_H;
      fields.tapTree = collateral.leaves.map((script) => ({ depth: 1, version: TAPSCRIPT_LEAF_VERSION, script }));
    }
    tx.addOutput(fields);
  });
  return tx;
}

function loadPsbt(psbtBase64) {
  let tx;
  try {
    tx = Transaction.fromPSBT(base64.decode(String(psbtBase64).trim()), PSBT_OPTIONS);
  } catch (error) {
    throw refuse('malformed_psbt', `not a valid PSBT: ${error.message}`);
  }
  let raw;
  try {
    raw = RawTx.decode(tx.unsignedTx);
  } catch (error) {
    throw refuse('malformed_psbt', `the PSBT's unsigned transaction does not parse: ${error.message}`);
  }
  const unsigned = {
    version: raw.version,
    inputs: raw.inputs.map((input) => ({
      txid: hex.encode(input.txid),
      vout: input.index,
      sequence: input.sequence,
      scriptSig: input.finalScriptSig,
      witness: [],
    })),
    outputs: raw.outputs.map((output) => ({ value: output.amount, script: output.script })),
    locktime: raw.lockTime,
  };
  return { psbt: tx, unsigned };
}

// -- checking (bitcoin/presignature.py) -------------------------------------------------------------------------------

function checkFrame(tx, outpoint, sequence, name) {
  if (tx.version !== TX_VERSION) throw refuse('wrong_version', `${name} must be version 2, got ${tx.version}`);
  if (tx.inputs.length !== 1) {
    throw refuse('wrong_input_count', `${name} must have exactly one input, got ${tx.inputs.length}`);
  }
  const input = tx.inputs[0];
  if (outpoint !== null && (input.txid !== outpoint.txid || input.vout !== outpoint.vout)) {
    throw refuse('wrong_outpoint', `${name} spends ${input.txid}:${input.vout}, not ${outpoint.txid}:${outpoint.vout}`);
  }
  if (input.sequence !== sequence) {
    throw refuse('wrong_sequence', `${name} nSequence must be 0x${sequence.toString(16).padStart(8, '0')}, got ` +
      `0x${input.sequence.toString(16).padStart(8, '0')}`);
  }
  if (tx.locktime !== 0) throw refuse('wrong_locktime', `${name} locktime must be 0, got ${tx.locktime}`);
  if (input.scriptSig && input.scriptSig.length) {
    throw refuse('nonempty_script_sig', `${name}'s input must have an empty scriptSig`);
  }
}

function checkClaimedPrevout(claimed, prevout) {
  if (claimed && (claimed.value !== prevout.value || !equal(claimed.script, prevout.script))) {
    throw refuse('witness_utxo_mismatch', `the PSBT claims the spent output holds ${claimed.value} sat under ` +
      `${hex.encode(claimed.script)}; the loan says ${prevout.value} sat under ${hex.encode(prevout.script)}`);
  }
}

function checkFeeRate(p, f) {
  if (p.feeSats < 0n) throw refuse('outputs_exceed_input', `${p.kind}'s outputs exceed the value it spends`);
  const rate = fraction(p.feeSats, BigInt(finalVsize(p)));
  if (lessThan(rate, f.minRate)) {
    throw refuse('fee_rate_too_low', `pays ${feeRateText(rate)} sat/vB, below ${feeRateText(f.minRate)} sat/vB`);
  }
  if (lessThan(f.maxRate, rate)) {
    throw refuse('fee_rate_too_high', `pays ${feeRateText(rate)} sat/vB, above ${feeRateText(f.maxRate)} sat/vB`);
  }
}

function checkTx1(f, tx, claimed) {
  requireFacts(f, 'escrowOutpoint', 'hL');
  checkFrame(tx, f.escrowOutpoint, SEQUENCE_RBF_NO_LOCK, 'TX_1');
  const p = prepared(f, KINDS.TX_1, tx);
  checkClaimedPrevout(claimed, p.prevout);
  if (tx.outputs.length !== 2 && tx.outputs.length !== 3) {
    throw refuse('wrong_output_count', `TX_1 must have two or three outputs, got ${tx.outputs.length}`);
  }
  const fee = tx.outputs[FEE_OUTPUT_INDEX];
  const collateral = tx.outputs[COLLATERAL_OUTPUT_INDEX];
  if (!equal(fee.script, f.lenderPayout)) {
    throw refuse('wrong_fee_output', "output 0 does not pay the lender's payout address");
  }
  if (fee.value !== f.originationFeeSats) {
    throw refuse('wrong_fee_amount', `output 0 pays ${fee.value} sat; the origination fee is ` +
      `${f.originationFeeSats} sat`);
  }
  if (fee.value < dustThreshold(fee.script)) {
    throw refuse('dust_fee_output', `the ${fee.value} sat origination fee output is dust`);
  }
  if (!equal(collateral.script, f.collateral.script)) {
    throw refuse('wrong_collateral_output', "output 1 is not the loan's collateral output");
  }
  if (collateral.value < f.collateralSats) {
    throw refuse('insufficient_collateral', `output 1 locks ${collateral.value} sat; the loan requires ` +
      `${f.collateralSats} sat`);
  }
  if (collateral.value > f.capSats) {
    throw refuse('collateral_above_cap', `output 1 locks ${collateral.value} sat, above repayment + bond ` +
      `(${f.capSats} sat): the lender would gain by refusing the repayment`);
  }
  if (collateral.value !== f.collateralSats) {
    throw refuse('wrong_collateral_amount', `output 1 locks ${collateral.value} sat; the collateral is exactly ` +
      `${f.collateralSats} sat`);
  }
  if (tx.outputs.length === 3) {
    const change = tx.outputs[CHANGE_OUTPUT_INDEX];
    if (!equal(change.script, f.borrowerPayout)) {
      throw refuse('wrong_change_output', "output 2 does not pay the borrower's payout address");
    }
    if (change.value < dustThreshold(f.borrowerPayout)) {
      throw refuse('dust_change_output', `the ${change.value} sat change output is dust`);
    }
  }
  p.feeSats = p.prevout.value - tx.outputs.reduce((sum, o) => sum + o.value, 0n);
  if (tx.outputs.length === 2 && p.feeSats >= 0n) {
    const withChange = { ...tx, outputs: [...tx.outputs, { value: 0n, script: f.borrowerPayout }] };
    const room = p.feeSats - feeForVsize(finalVsize(prepared(f, KINDS.TX_1, withChange)), f.maxRate);
    if (room >= dustThreshold(f.borrowerPayout)) {
      throw refuse('missing_change_output', `TX_1 gives the miner ${p.feeSats} sat; ${room} sat of it belong to ` +
        "the borrower's change");
    }
  }
  checkFeeRate(p, f);
  return p;
}

function checkSweep(f, kind, tx, claimed, tx1Txid) {
  let outpoint;
  if (kind === KINDS.TX_EXIT) {
    requireFacts(f, 'escrowOutpoint');
    outpoint = f.escrowOutpoint;
  } else {
    requireFacts(f, 'hL');
    outpoint = tx1Txid ? collateralOutpoint(tx1Txid) : null;
  }
  checkFrame(tx, outpoint, kind === KINDS.TX_EXIT ? f.t0 : SEQUENCE_RBF_NO_LOCK, kind);
  if (kind !== KINDS.TX_EXIT && tx.inputs[0].vout !== COLLATERAL_OUTPUT_INDEX) {
    throw refuse('wrong_outpoint', `${kind} must spend TX_1's output 1`);
  }
  const p = prepared(f, kind, tx);
  checkClaimedPrevout(claimed, p.prevout);
  if (tx.outputs.length !== 1) {
    throw refuse('wrong_output_count', `${kind} must have exactly one output, got ${tx.outputs.length}`);
  }
  const payout = tx.outputs[0];
  if (!equal(payout.script, f.borrowerPayout)) {
    throw refuse('wrong_payout_output', `${kind} does not pay the borrower's payout address`);
  }
  if (payout.value < dustThreshold(payout.script)) {
    throw refuse('dust_payout_output', `${kind}'s ${payout.value} sat payout is dust`);
  }
  p.feeSats = p.prevout.value - payout.value;
  checkFeeRate(p, f);
  return p;
}

function checkBorrowerTransaction(f, tx, claimed, tx1Txid) {
  if (tx.inputs.length !== 1) {
    throw refuse('wrong_input_count', `a loan transaction has exactly one input, got ${tx.inputs.length}`);
  }
  const input = tx.inputs[0];
  const escrow = f.escrowOutpoint;
  if (escrow !== null && input.txid === escrow.txid && input.vout === escrow.vout) {
    if (input.sequence === f.t0) return checkSweep(f, KINDS.TX_EXIT, tx, claimed);
    return checkTx1(f, tx, claimed);
  }
  if (f.hL !== null && input.vout === COLLATERAL_OUTPUT_INDEX) {
    return checkSweep(f, KINDS.TX_RELEASE, tx, claimed, tx1Txid);
  }
  throw refuse('not_a_loan_transaction', `the transaction spends ${input.txid}:${input.vout}: neither this loan's ` +
    'escrow nor its collateral output');
}

const OUTPUT_ROLES = { [KINDS.TX_1]: ['origination_fee', 'collateral', 'change'] };

function summary(f, p) {
  const roles = OUTPUT_ROLES[p.kind] || ['payout'];
  const size = finalVsize(p);
  return {
    kind: p.kind,
    txid: txid(p.tx),
    spends: `${p.tx.inputs[0].txid}:${p.tx.inputs[0].vout}`,
    input_sats: p.prevout.value.toString(),
    outputs: p.tx.outputs.map((output, index) => ({
      index,
      role: roles[index],
      address: scriptAddress(output.script, f.network),
      amount_sats: output.value.toString(),
    })),
    fee_sats: p.feeSats.toString(),
    vsize: size,
    fee_rate_sat_vb: feeRateText(fraction(p.feeSats, BigInt(size))),
  };
}

function claimedPrevout(psbt) {
  let utxo;
  try {
    utxo = psbt.getInput(0).witnessUtxo;
  } catch (error) {
    throw refuse('malformed_psbt', error.message);
  }
  return utxo ? { value: utxo.amount, script: utxo.script } : null;
}

function checkedPsbt(loanFile, psbtBase64, tx1Txid) {
  const f = loadLoanFile(loanFile);
  const { psbt, unsigned } = loadPsbt(psbtBase64);
  if (psbt.inputsLength !== 1) {
    throw refuse('wrong_input_count', `a loan transaction has exactly one input, the PSBT has ${psbt.inputsLength}`);
  }
  const hashType = psbt.getInput(0).sighashType;
  if (hashType !== undefined && hashType !== 0) {
    throw refuse('wrong_sighash_type', `PSBT asks for sighash type ${hashType}, not SIGHASH_DEFAULT`);
  }
  const p = checkBorrowerTransaction(f, unsigned, claimedPrevout(psbt), tx1Txid || null);
  return { f, psbt, p };
}

/**
 * Which of the loan's transactions the PSBT is (TX_1, TX_exit or TX_release), every output, amount and the fee
 * checked against the loan file; returns a summary or throws SignerRefusal with the Python verifier's reason.
 * Given `tx1Txid`, a TX_release must spend exactly that TX_1's output 1.
 */
export function checkLoanTransaction(loanFile, psbtBase64, { tx1Txid = null } = {}) {
  const { f, p } = checkedPsbt(loanFile, psbtBase64, tx1Txid);
  return summary(f, p);
}

function randomBytes(length) {
  return globalThis.crypto.getRandomValues(new Uint8Array(length));
}

function signPrepared(f, p, privateKey) {
  const xonly = schnorr.getPublicKey(privateKey);
  if (!equal(xonly, f.xB)) throw refuse('wrong_signer', "the key is not the loan's borrower key (xB)");
  return schnorr.sign(sighash(p), privateKey, randomBytes(32));
}

/**
 * The borrower's signature added to a PSBT of this loan's TX_1, TX_exit or TX_release, after
 * `checkLoanTransaction` accepted it (PROTOCOL.md attack 16). Signs the sighash computed from the loan's own
 * facts (SIGHASH_DEFAULT over the derived leaf). Returns { psbt (base64), summary }.
 */
export function signPsbt(loanFile, psbtBase64, privateKeyHex, { tx1Txid = null } = {}) {
  const privateKey = parsePrivateKey(privateKeyHex);
  const { f, psbt, p } = checkedPsbt(loanFile, psbtBase64, tx1Txid);
  const signature = signPrepared(f, p, privateKey);
  psbt.updateInput(0, { tapScriptSig: [[{ pubKey: f.xB, leafHash: leafHash(p) }, signature]] }, true);
  return { psbt: base64.encode(psbt.toPSBT(0)), summary: summary(f, p) };
}

/** The unsigned TX_1 PSBT at `feeRateSatVb` (exactly bitcoin.transactions.build_tx1), with its summary. */
export function buildTx1(loanFile, feeRateSatVb) {
  const f = loadLoanFile(loanFile);
  const p = buildTx1Prepared(f, feeRateSatVb);
  return { psbt: base64.encode(createPsbt(p, f.collateral).toPSBT(0)), txid: txid(p.tx), summary: summary(f, p) };
}

/**
 * The unsigned TX_exit PSBT at `feeRateSatVb` (exactly bitcoin.transactions.build_exit: escrow leaf 0, nSequence
 * t_0, all but the fee to the borrower's address), with its summary. Needs the escrow outpoint, not hL.
 */
export function buildExit(loanFile, feeRateSatVb) {
  const f = loadLoanFile(loanFile);
  requireFacts(f, 'escrowOutpoint', 'escrowSats');
  const p = buildSweepPrepared(f, KINDS.TX_EXIT, f.escrowOutpoint, feeRateSatVb);
  return { psbt: base64.encode(createPsbt(p).toPSBT(0)), txid: txid(p.tx), summary: summary(f, p) };
}

function signedExitRung(f, rate, privateKey) {
  const exit = buildSweepPrepared(f, KINDS.TX_EXIT, f.escrowOutpoint, rate);
  checkSweep(f, KINDS.TX_EXIT, exit.tx, null);
  const signature = signPrepared(f, exit, privateKey);
  const finalTx = { ...exit.tx, inputs: [{ ...exit.tx.inputs[0],
    witness: [signature, leafScript(exit), exit.tree.controlBlock(exit.leaf)] }] };
  return { fee_rate_sat_vb: feeRateText(parseFeeRate(rate)), fee_sats: exit.feeSats.toString(),
    tx_hex: hex.encode(serializeTx(finalTx)), txid: txid(finalTx), summary: summary(f, exit) };
}

/**
 * The borrower's pre-signed ladders, like `python -m bitcoin ladders`: at each fee rate a signed TX_release PSBT
 * (spending output 1 of `tx1Txid`; the lender's pL completes it) and a finalized TX_exit (valid t_0 blocks after
 * the escrow confirmed). Each rung goes through `checkLoanTransaction` before it is signed.
 */
export function buildLadders(loanFile, tx1Txid, feeRates, privateKeyHex) {
  const privateKey = parsePrivateKey(privateKeyHex);
  const f = loadLoanFile(loanFile);
  requireFacts(f, 'escrowOutpoint', 'hL');
  const release = [];
  const exits = [];
  for (const rate of feeRates) {
    const text = feeRateText(parseFeeRate(rate));
    const rel = buildSweepPrepared(f, KINDS.TX_RELEASE, collateralOutpoint(tx1Txid), rate);
    const signed = signPsbt(loanFile, base64.encode(createPsbt(rel).toPSBT(0)), privateKeyHex, { tx1Txid });
    release.push({ fee_rate_sat_vb: text, fee_sats: rel.feeSats.toString(), psbt: signed.psbt });
    const { summary: _shown, ...exit } = signedExitRung(f, rate, privateKey);
    exits.push(exit);
  }
  return { tx1_txid: parseTxid(tx1Txid), release, exit: exits };
}

/**
 * The TX_exit ladder alone, for an escrow that never reached the pre-sign step (no hL, no TX_1: a request
 * cancelled or never offered): at each fee rate a finalized TX_exit (escrow leaf 0, nSequence t_0) paying the
 * borrower's address, checked against the loan file before it is signed, with the summary of what it pays
 * (`checkLoanTransaction`'s shape). Needs only the escrow outpoint and value in the loan file.
 */
export function buildExitLadder(loanFile, feeRates, privateKeyHex) {
  const privateKey = parsePrivateKey(privateKeyHex);
  const f = loadLoanFile(loanFile);
  requireFacts(f, 'escrowOutpoint', 'escrowSats');
  if (!feeRates.length) throw invalid('a ladder needs at least one fee rate');
  return { exit: feeRates.map((rate) => signedExitRung(f, rate, privateKey)) };
}

/**
 * A new borrower key and preimage from Web Crypto: { private_key, xonly_pubkey (xB), preimage (pB), hash (hB) },
 * all hex. Keep private_key and preimage secret: they never leave the borrower's browser except in their own kit.
 */
export function newBorrowerSecrets() {
  let privateKey;
  for (;;) {
    privateKey = randomBytes(32);
    const scalar = BigInt('0x' + hex.encode(privateKey));
    if (scalar > 0n && scalar < CURVE_ORDER) break;
  }
  const preimage = randomBytes(32);
  return {
    private_key: hex.encode(privateKey),
    xonly_pubkey: hex.encode(schnorr.getPublicKey(privateKey)),
    preimage: hex.encode(preimage),
    hash: hex.encode(sha256(preimage)),
  };
}

/** The x-only public key (xB) of a private key, hex. */
export function xonlyPublicKey(privateKeyHex) {
  return hex.encode(schnorr.getPublicKey(parsePrivateKey(privateKeyHex)));
}
