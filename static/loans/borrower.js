// The borrower's Bitcoin key made, used and forgotten in the browser (an ES module: templates/loans/borrower/).
//
// - New loan page (form[data-new-loan]): newBorrowerSecrets() makes the key and pB from Web Crypto randomness; the
//   form gets only xB and hB; the key and pB stay in this browser's localStorage; the submit stays disabled until
//   the recovery kit (a JSON file through a Blob URL) was downloaded for the terms on the form.
// - Loan page (section[data-borrower-xb]): the record made for this xB is filed under the loan's id; the TX_1
//   pre-signature (buildTx1 -> checkLoanTransaction, shown -> signPsbt -> POST presignature/) and the ladders
//   (buildLadders -> POST ladders/) are made here and uploaded; the server's verdict is shown (its code on
//   refusal); an escrow in the exit step with no TX_exit rung (never pre-signed: no hL) gets its TX_exit ladder
//   here the same way (buildExit -> checkLoanTransaction, shown -> buildExitLadder -> POST ladders/, exit only);
//   the kit is offered again with every pre-signed transaction. pB is put into the accept step's field for
//   wallet.js (appended to acceptLoanOffer only); once the offer is accepted the page offers to forget both. A
//   page whose browser holds no key for the loan lets the borrower load the recovery kit file back (read here with
//   File.text(), never uploaded; refused unless its xB and loan id are the page's and its key and pB are xB's and
//   hB's), so the page can sign again.
//
// Nothing secret is sent anywhere: the requests carry the loan's public values and signed transactions only.
// No inline script (the Content-Security-Policy forbids it): everything comes from data-* attributes.

import {
  buildExit,
  buildExitLadder,
  buildLadders,
  buildTx1,
  checkLoanTransaction,
  newBorrowerSecrets,
  signPsbt,
  xonlyPublicKey,
} from './vendor/signer.js';

const KIT_FORMAT = 'btc-collateral-loan-recovery-kit/1';
const PREFIX = 'loans:borrower-secrets:';
const byXb = (xb) => `${PREFIX}xb:${xb.toLowerCase()}`;
const byLoan = (id) => `${PREFIX}loan:${id}`;
// Once the offer is accepted, pB is public on the EVM chain and TX_1 is the desk's to broadcast: the key is only
// needed again through the pre-signed transactions in the kit.
const ACCEPTED = new Set(['active', 'repayment_in_progress', 'repaid', 'defaulted', 'repayment_refunded']);

// -- the store --------------------------------------------------------------------------------------------------

function load(key) {
  try {
    const text = window.localStorage.getItem(key);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function save(key, record) {
  window.localStorage.setItem(key, JSON.stringify(record));
}

function forget(key) {
  window.localStorage.removeItem(key);
}

/** The loan's record: under its id, or the one made for its xB on the new loan page (then filed under the id). */
function loanRecord(loanId, xb) {
  const filed = load(byLoan(loanId));
  if (filed) return filed;
  const pending = load(byXb(xb));
  if (!pending || pending.xonly_pubkey !== xb.toLowerCase()) return null;
  pending.loan_id = Number(loanId);
  save(byLoan(loanId), pending);
  forget(byXb(xb));
  return pending;
}

// -- the recovery kit ----------------------------------------------------------------------------------------------

function kitOf(record) {
  return {
    format: KIT_FORMAT,
    note:
      'Your Bitcoin key and your secret pB for this loan: whoever holds this file can sign as you. Keep it offline. ' +
      'With the loan file and the pre-signed transactions, `python -m bitcoin` or any taproot wallet can act.',
    written_at: new Date().toISOString(),
    loan_id: record.loan_id ?? null,
    terms: record.terms,
    borrower_btc_pubkey: record.xonly_pubkey,
    borrower_hash: record.hash,
    borrower_preimage: record.preimage,
    borrower_private_key: record.private_key,
    loan_file: record.loan_file ?? null,
    presigned: record.presigned ?? null,
  };
}

function downloadKit(record) {
  const blob = new Blob([JSON.stringify(kitOf(record), null, 2) + '\n'], { type: 'application/json' });
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  const name = record.loan_id ? `loan-${record.loan_id}` : `new-loan-${record.xonly_pubkey.slice(0, 12)}`;
  link.download = `${name}-recovery-kit.json`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// -- the API -----------------------------------------------------------------------------------------------------

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : '';
}

function idempotencyKey() {
  if (window.crypto.randomUUID) return window.crypto.randomUUID();
  return Array.from(window.crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

class Refused extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

async function api(url, body) {
  const init = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.method = 'POST';
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-CSRFToken'] = csrfToken();
    init.headers['Idempotency-Key'] = idempotencyKey();
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    throw new Refused((data && data.code) || `http_${response.status}`, (data && data.message) || response.statusText);
  }
  return data;
}

// -- showing things -----------------------------------------------------------------------------------------------

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function showRefusal(target, error) {
  const code = error.code || error.reason || 'error';
  const box = element('div', null, { class: 'refusal', role: 'alert', 'data-code': code });
  box.append(element('strong', `Refused (${code}):`), ' ', error.message || String(error));
  target.replaceChildren(box);
}

function showDone(target, text) {
  target.replaceChildren(element('div', text, { class: 'done', role: 'status' }));
}

/** Satoshis (a decimal string of an integer) as BTC, exact from the integer and without trailing zeros, like the
 * pages' ``btc`` template filter (loans/templatetags/amounts.py): "1200000" -> "0.012 BTC". */
function btc(satsText) {
  const sats = BigInt(satsText);
  const sign = sats < 0n ? '-' : '';
  const magnitude = sats < 0n ? -sats : sats;
  const fraction = (magnitude % 100000000n).toString().padStart(8, '0').replace(/0+$/, '');
  return `${sign}${magnitude / 100000000n}${fraction ? '.' + fraction : ''} BTC`;
}

/** What a transaction pays, as checkLoanTransaction found it: each output, amount, the fee and the fee rate. */
function summaryTable(summary) {
  const wrap = element('div', null, { class: 'table-scroll', 'data-tx-summary': summary.kind });
  wrap.append(element('p', `${summary.kind.toUpperCase()} ${summary.txid} spends ${summary.spends} ` +
    `(${summary.input_sats} sat) (${btc(summary.input_sats)}).`));
  const table = element('table');
  const head = element('tr');
  for (const title of ['Output', 'Pays', 'Address', 'Amount (sat)', 'Amount (BTC)']) {
    head.append(element('th', title, { scope: 'col' }));
  }
  table.append(element('thead'));
  table.tHead.append(head);
  const body = element('tbody');
  for (const output of summary.outputs) {
    const row = element('tr', null, { 'data-output': String(output.index) });
    row.append(element('td', String(output.index)), element('td', output.role.replace('_', ' ')));
    const address = element('td');
    address.append(element('code', output.address || '(no address)'));
    row.append(address, element('td', output.amount_sats), element('td', btc(output.amount_sats)));
    body.append(row);
  }
  table.append(body);
  wrap.append(table);
  wrap.append(element('p', `Miner fee: ${summary.fee_sats} sat (${btc(summary.fee_sats)}) for ${summary.vsize} vB ` +
    `(${summary.fee_rate_sat_vb} sat/vB).`, { 'data-fee': summary.fee_sats }));
  return wrap;
}

function ladderRates(input, loanFile, tx1Rate) {
  const given = input.value.split(',').map((text) => text.trim()).filter(Boolean);
  if (given.length) return given;
  // Default: the TX_1 rate (or the file's minimum) and higher rungs, within the loan file's bounds.
  const base = Number(tx1Rate || loanFile.min_fee_rate_sat_vb) || 1;
  const max = Number(loanFile.max_fee_rate_sat_vb) || base;
  const rates = [base, base * 2, base * 5, base * 10].filter((rate) => rate <= max).map((rate) => String(rate));
  return [...new Set(rates)];
}

// -- the new loan page -------------------------------------------------------------------------------------------

function termsOf(form) {
  const value = (name) => (form.elements[name] ? form.elements[name].value.trim() : '');
  return {
    amount_wei: value('amount_wei'),
    borrower_payout_address: value('borrower_payout_address'),
    parameters_version: form.dataset.parametersVersion || null,
  };
}

function sameTerms(a, b) {
  return !!a && !!b && a.amount_wei === b.amount_wei && a.borrower_payout_address === b.borrower_payout_address;
}

function dropUnusedPending(keep) {
  for (let i = window.localStorage.length - 1; i >= 0; i -= 1) {
    const key = window.localStorage.key(i);
    if (key && key.startsWith(`${PREFIX}xb:`) && key !== keep) {
      const record = load(key);
      if (!record || !record.kit_downloaded_at) forget(key); // never downloaded: no loan can have been made with it
    }
  }
}

function wireNewLoan(form) {
  if (form.dataset.signerWired) return;
  form.dataset.signerWired = '1';
  const xbInput = form.elements.borrower_btc_pubkey;
  const hbInput = form.elements.borrower_hash;
  const kit = form.querySelector('[data-recovery-kit]');
  const submit = form.querySelector('[data-needs-kit]');
  if (!xbInput || !hbInput || !kit || !submit) return;
  const canSubmit = !submit.disabled;
  const status = kit.querySelector('[data-kit-status]');

  // A refused POST comes back with the same xB: keep the secrets made for it.
  let record = xbInput.value ? load(byXb(xbInput.value.trim())) : null;
  if (!record) {
    const secrets = newBorrowerSecrets();
    record = { ...secrets, made_at: new Date().toISOString(), kit_downloaded_at: null, terms: null };
    save(byXb(record.xonly_pubkey), record);
  }
  dropUnusedPending(byXb(record.xonly_pubkey));
  xbInput.value = record.xonly_pubkey;
  hbInput.value = record.hash;
  xbInput.readOnly = hbInput.readOnly = true;
  const keys = form.querySelector('[data-borrower-keys]');
  if (keys) keys.hidden = true;
  kit.hidden = false;
  kit.querySelector('[data-kit-xb]').textContent = `xB ${record.xonly_pubkey}`;

  const refresh = () => {
    const ready = record.kit_downloaded_at !== null && sameTerms(record.terms, termsOf(form));
    submit.disabled = !canSubmit || !ready;
    if (record.kit_downloaded_at && !ready) status.textContent = 'The terms changed: download the kit again.';
    else if (ready) status.textContent = 'Recovery kit downloaded. You may create the loan.';
    else status.textContent = 'Download the recovery kit to go on.';
  };
  kit.querySelector('[data-kit-download]').addEventListener('click', () => {
    record.terms = termsOf(form);
    downloadKit(record);
    record.kit_downloaded_at = new Date().toISOString();
    save(byXb(record.xonly_pubkey), record);
    refresh();
  });
  form.addEventListener('input', refresh);
  form.addEventListener('change', refresh);
  form.addEventListener('submit', (event) => {
    refresh();
    if (submit.disabled) event.preventDefault();
  });
  refresh();
}

// -- the loan page -----------------------------------------------------------------------------------------------

async function fetchLoanFile(section) {
  return api(section.dataset.loanFileUrl);
}

async function uploadLadders(loanSection, record, box, loanFile, tx1Txid, rates) {
  const ladders = buildLadders(loanFile, tx1Txid, rates, record.private_key);
  const rungs = await api(box.dataset.laddersUrl, {
    release: ladders.release.map((rung) => rung.psbt),
    exit: ladders.exit.map((rung) => rung.tx_hex),
  });
  record.loan_file = loanFile;
  record.presigned = { ...(record.presigned || {}), release: ladders.release, exit: ladders.exit };
  save(byLoan(loanSection.dataset.loan), record);
  return rungs;
}

// The page is marked busy (data-signer-busy) while what the borrower reviews or signs is on screen: no poll or push
// swaps it away (static/loans/live.js) until the verdict.

/** Run ``work`` with ``button`` disabled and the page busy; a refusal is shown in ``verdict``. */
async function whileSigning(loanSection, button, verdict, work) {
  button.disabled = true;
  loanSection.dataset.signerBusy = '1';
  try {
    await work();
  } catch (error) {
    showRefusal(verdict, error);
  } finally {
    button.disabled = false;
    delete loanSection.dataset.signerBusy;
  }
}

/**
 * A step the borrower reviews before signing: ``prepare`` builds what will be signed, checked against the loan file,
 * and returns it with the summaries to show; ``commit`` signs exactly that and uploads it. The page stays busy from
 * the build to the verdict.
 */
function wireReviewThenSign(loanSection, { build, sign, summaryBox, verdict }, prepare, commit) {
  let built = null;
  build.addEventListener('click', async () => {
    loanSection.dataset.signerBusy = '1';
    sign.hidden = true;
    built = null;
    verdict.replaceChildren();
    try {
      const prepared = await prepare();
      built = prepared.built;
      summaryBox.replaceChildren(...prepared.summaries.map(summaryTable));
      sign.hidden = false;
    } catch (error) {
      showRefusal(summaryBox, error);
      delete loanSection.dataset.signerBusy;
    }
  });
  sign.addEventListener('click', () => {
    if (built) whileSigning(loanSection, sign, verdict, () => commit(built));
  });
}

function wirePresign(loanSection, record, box) {
  const verdict = box.querySelector('[data-presign-verdict]');
  const parts = {
    build: box.querySelector('[data-presign-build]'),
    sign: box.querySelector('[data-presign-sign]'),
    summaryBox: box.querySelector('[data-presign-summary]'),
    verdict,
  };
  wireReviewThenSign(
    loanSection,
    parts,
    async () => {
      const loanFile = await fetchLoanFile(loanSection);
      const rate = box.querySelector('[data-fee-rate]').value.trim();
      const tx1 = buildTx1(loanFile, rate);
      const summary = checkLoanTransaction(loanFile, tx1.psbt); // checked against the loan file before signing
      return { built: { loanFile, rate, psbt: tx1.psbt, txid: summary.txid }, summaries: [summary] };
    },
    async (built) => {
      const signed = signPsbt(built.loanFile, built.psbt, record.private_key);
      const stored = await api(box.dataset.presignatureUrl, { psbt: signed.psbt });
      record.loan_file = built.loanFile;
      record.presigned = { ...(record.presigned || {}), tx_1: { txid: stored.txid, psbt: signed.psbt } };
      save(byLoan(loanSection.dataset.loan), record);
      showDone(verdict, `TX_1 pre-signature verified by the desk (txid ${stored.txid}). Signing the ladders...`);
      const rates = ladderRates(box.querySelector('[data-ladder-rates]'), built.loanFile, built.rate);
      const rungs = await uploadLadders(loanSection, record, box, built.loanFile, stored.txid, rates);
      showDone(verdict, `TX_1 pre-signature verified by the desk (txid ${stored.txid}); ${rungs.length} ladder ` +
        'rung(s) verified and stored. Download the updated recovery kit: it now holds every pre-signed transaction.');
      offerKit(loanSection, record);
    },
  );
}

function wireLadders(loanSection, record, box) {
  const button = box.querySelector('[data-ladders-sign]');
  const verdict = box.querySelector('[data-presign-verdict]');
  button.addEventListener('click', () =>
    whileSigning(loanSection, button, verdict, async () => {
      const loanFile = await fetchLoanFile(loanSection);
      const rates = ladderRates(box.querySelector('[data-ladder-rates]'), loanFile, null);
      const rungs = await uploadLadders(loanSection, record, box, loanFile, box.dataset.tx1Txid, rates);
      showDone(verdict, `${rungs.length} ladder rung(s) verified and stored. Download the updated recovery kit.`);
      offerKit(loanSection, record);
    }),
  );
}

// The exit step of an escrow that never reached the pre-sign step (no hL, no TX_1): the TX_exit ladder alone, built
// from the loan file and checked against it (checkLoanTransaction), shown, then signed (buildExitLadder, the same
// transactions as shown) and uploaded to the ladders endpoint with no TX_release rung.
function wireExitSigner(loanSection, record, box) {
  const verdict = box.querySelector('[data-exit-verdict]');
  const sign = box.querySelector('[data-exit-sign]');
  const ratesInput = box.querySelector('[data-exit-rates]');
  const summaryBox = box.querySelector('[data-exit-summary]');
  const parts = { build: box.querySelector('[data-exit-build]'), sign, summaryBox, verdict };
  wireReviewThenSign(
    loanSection,
    parts,
    async () => {
      const loanFile = await fetchLoanFile(loanSection);
      const rates = ladderRates(ratesInput, loanFile, ratesInput.dataset.defaultRate || null);
      const shown = rates.map((rate) => {
        const exit = buildExit(loanFile, rate);
        return checkLoanTransaction(loanFile, exit.psbt); // checked against the loan file before signing
      });
      return { built: { loanFile, rates, txids: shown.map((summary) => summary.txid) }, summaries: shown };
    },
    async (built) => {
      const ladder = buildExitLadder(built.loanFile, built.rates, record.private_key);
      const signedTxids = ladder.exit.map((rung) => rung.txid);
      if (signedTxids.join() !== built.txids.join()) {
        throw new Refused('not_what_was_shown', 'the signed TX_exit rungs are not the transactions shown');
      }
      const rungs = await api(box.dataset.laddersUrl, { release: [], exit: ladder.exit.map((rung) => rung.tx_hex) });
      record.loan_file = built.loanFile;
      const exits = ladder.exit.map(({ summary: _shown, ...rung }) => rung);
      record.presigned = { ...(record.presigned || {}), exit: exits };
      save(byLoan(loanSection.dataset.loan), record);
      showDone(verdict, `${rungs.length} TX_exit rung(s) verified and stored by the desk. The watchtower broadcasts ` +
        'one once t_0 matures; download the updated recovery kit: it now holds them.');
      sign.hidden = true;
      offerKit(loanSection, record);
    },
  );
}

function offerKit(loanSection, record) {
  const panel = loanSection.querySelector('[data-browser-key]');
  if (!panel) return;
  const button = panel.querySelector('[data-kit-download]');
  button.hidden = false;
  if (!button.dataset.wired) {
    button.dataset.wired = '1';
    button.addEventListener('click', () => downloadKit(load(byLoan(loanSection.dataset.loan)) || record));
  }
}

function offerForget(loanSection) {
  const panel = loanSection.querySelector('[data-browser-key]');
  const button = panel && panel.querySelector('[data-key-forget]');
  if (!button || button.dataset.wired) return;
  button.dataset.wired = '1';
  button.hidden = false;
  button.addEventListener('click', () => {
    forget(byLoan(loanSection.dataset.loan));
    panel.querySelector('[data-key-held]').hidden = true;
    panel.querySelector('[data-kit-download]').hidden = true;
    button.hidden = true;
    panel.querySelector('[data-key-status]').textContent =
      'Forgotten: this browser no longer holds your key or pB. Your recovery kit is the only copy.';
  });
}

// -- the recovery kit loaded back into this browser ----------------------------------------------------------------

async function sha256Hex(hexText) {
  const bytes = Uint8Array.from(hexText.match(/../g) || [], (pair) => parseInt(pair, 16));
  const digest = await window.crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

const HEX64 = /^[0-9a-f]{64}$/;

/** The kit's record for this loan, or a Refused with the reason: read here, never sent anywhere. */
async function recordFromKit(loanSection, text) {
  let kit;
  try {
    kit = JSON.parse(text);
  } catch {
    throw new Refused('kit_unreadable', 'this file is not JSON: choose the recovery kit this desk made for you');
  }
  if (!kit || kit.format !== KIT_FORMAT) {
    throw new Refused('kit_not_a_kit', `this file is not a recovery kit (format ${KIT_FORMAT})`);
  }
  const lower = (value) => (typeof value === 'string' ? value.trim().toLowerCase() : '');
  const xb = lower(kit.borrower_btc_pubkey);
  const key = lower(kit.borrower_private_key);
  const preimage = lower(kit.borrower_preimage);
  const hash = lower(kit.borrower_hash);
  const loanId = loanSection.dataset.loan;
  if (kit.loan_id !== null && kit.loan_id !== undefined && String(kit.loan_id) !== loanId) {
    throw new Refused('kit_wrong_loan', `this kit is for loan ${kit.loan_id}, not loan ${loanId}: nothing was loaded`);
  }
  if (xb !== loanSection.dataset.borrowerXb.toLowerCase()) {
    throw new Refused('kit_wrong_key', `this kit's key is xB ${xb || '(none)'}, not this loan's ` +
      `${loanSection.dataset.borrowerXb}: nothing was loaded`);
  }
  if (!HEX64.test(key) || xonlyPublicKey(key) !== xb) {
    throw new Refused('kit_key_mismatch', "the kit's private key is not the key of its xB: nothing was loaded");
  }
  if (!HEX64.test(preimage) || !HEX64.test(hash) || (await sha256Hex(preimage)) !== hash) {
    throw new Refused('kit_preimage_mismatch', "the kit's pB does not hash to its hB: nothing was loaded");
  }
  return {
    private_key: key,
    xonly_pubkey: xb,
    preimage,
    hash,
    loan_id: Number(loanId),
    terms: kit.terms ?? null,
    made_at: null,
    kit_downloaded_at: kit.written_at ?? new Date().toISOString(), // it came from a kit: one exists
    loan_file: kit.loan_file ?? null,
    presigned: kit.presigned ?? null,
    imported_at: new Date().toISOString(),
  };
}

function offerImport(loanSection) {
  const panel = loanSection.querySelector('[data-browser-key]');
  const box = panel && panel.querySelector('[data-kit-import]');
  if (!box || box.dataset.wired) return;
  box.dataset.wired = '1';
  box.hidden = false;
  const input = box.querySelector('[data-kit-file]');
  const status = box.querySelector('[data-kit-import-status]');
  input.addEventListener('change', async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    try {
      const record = await recordFromKit(loanSection, await file.text());
      save(byLoan(loanSection.dataset.loan), record);
      box.hidden = true;
      panel.querySelector('[data-key-missing]').hidden = true;
      panel.querySelector('[data-key-held]').hidden = false;
      panel.querySelector('[data-key-status]').textContent =
        'Your recovery kit is loaded into this browser (read here, sent nowhere): this page can sign again.';
      useRecord(loanSection, record);
    } catch (error) {
      showRefusal(status, error);
    } finally {
      input.value = ''; // an emptied field: the page's live updates do not take it for typing
    }
  });
}

function wireLoan(loanSection) {
  if (loanSection.dataset.signerWired) return;
  loanSection.dataset.signerWired = '1';
  const record = loanRecord(loanSection.dataset.loan, loanSection.dataset.borrowerXb);
  const panel = loanSection.querySelector('[data-browser-key]');
  if (panel) {
    panel.hidden = false;
    panel.querySelector(record ? '[data-key-held]' : '[data-key-missing]').hidden = false;
  }
  if (!record) {
    offerImport(loanSection);
    return;
  }
  useRecord(loanSection, record);
}

/** Everything the page does with the key it holds: the kit, forgetting, the signers, pB for the accept. */
function useRecord(loanSection, record) {
  offerKit(loanSection, record);
  if (ACCEPTED.has(loanSection.dataset.loanStatus)) offerForget(loanSection);
  const presign = loanSection.querySelector('[data-presign]');
  if (presign) {
    presign.hidden = false;
    wirePresign(loanSection, record, presign);
  }
  const ladders = loanSection.querySelector('[data-ladders]');
  if (ladders) {
    ladders.hidden = false;
    wireLadders(loanSection, record, ladders);
  }
  const exitSigner = loanSection.querySelector('[data-exit-signer]');
  if (exitSigner) {
    exitSigner.hidden = false;
    wireExitSigner(loanSection, record, exitSigner);
  }
  // The accept step: wallet.js appends pB from this field to acceptLoanOffer (and sends it nowhere else).
  const preimage = loanSection.querySelector('[data-borrower-preimage]');
  // (As its default value too: the live updates take a changed field for typing and would stop.)
  if (preimage && !preimage.value) preimage.value = preimage.defaultValue = record.preimage;
  loanSection.addEventListener('wallet:sent', (event) => {
    if (event.detail && event.detail.function === 'acceptLoanOffer') offerForget(loanSection);
  });
}

function wire(root) {
  const form = root.querySelector('form[data-new-loan]');
  if (form) wireNewLoan(form);
  const loan = root.querySelector('section[data-borrower-xb]');
  if (loan) wireLoan(loan);
}

wire(document);
// A swapped-in partial (htmx, the live updates) is wired again; what is wired already is left alone.
document.addEventListener('htmx:afterSwap', () => wire(document));
// While the browser builds, shows and signs a transaction, the loan's partial is not swapped under it.
document.addEventListener('htmx:beforeSwap', (event) => {
  const target = event.detail && event.detail.target;
  const busy = (element) => element.matches('[data-signer-busy]') || element.querySelector('[data-signer-busy]');
  if (target && target.querySelector && busy(target)) {
    event.detail.shouldSwap = false;
  }
});
