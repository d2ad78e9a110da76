// Sign-In with Ethereum (EIP-4361) through the browser's wallet (EIP-1193, window.ethereum).
// templates/loans/signin.html: the button carries the endpoints and where to go next in data-* attributes.
// 1. eth_requestAccounts, eth_chainId   2. POST nonce-url → {nonce, domain, uri, chain_id}
// 3. the EIP-4361 message               4. personal_sign   5. POST siwe-url {message, signature} → session
// Every refusal is shown with its code: the server's ({code, message}) or the page's own (no_wallet,
// wallet_rejected, wallet_error, siwe_wrong_chain, network_error).
"use strict";

(() => {
  // --- keccak-256 (EIP-55 checksummed addresses: the message must name the address so) --------------------------
  const MASK = (1n << 64n) - 1n;
  const RC = [
    0x0000000000000001n, 0x0000000000008082n, 0x800000000000808an, 0x8000000080008000n, 0x000000000000808bn,
    0x0000000080000001n, 0x8000000080008081n, 0x8000000000008009n, 0x000000000000008an, 0x0000000000000088n,
    0x0000000080008009n, 0x000000008000000an, 0x000000008000808bn, 0x800000000000008bn, 0x8000000000008089n,
    0x8000000000008003n, 0x8000000000008002n, 0x8000000000000080n, 0x000000000000800an, 0x800000008000000an,
    0x8000000080008081n, 0x8000000000008080n, 0x0000000080000001n, 0x8000000080008008n,
  ];
  // rotation offsets, lane x + 5y
  const ROT = [0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14];
  const rotl = (v, n) => (n === 0 ? v : ((v << BigInt(n)) | (v >> BigInt(64 - n))) & MASK);

  function keccakF(a) {
    const c = new Array(5);
    const b = new Array(25);
    for (let round = 0; round < 24; round++) {
      for (let x = 0; x < 5; x++) c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
      for (let x = 0; x < 5; x++) {
        const d = c[(x + 4) % 5] ^ rotl(c[(x + 1) % 5], 1);
        for (let y = 0; y < 25; y += 5) a[x + y] ^= d;
      }
      for (let x = 0; x < 5; x++) {
        for (let y = 0; y < 5; y++) b[y + 5 * ((2 * x + 3 * y) % 5)] = rotl(a[x + 5 * y], ROT[x + 5 * y]);
      }
      for (let x = 0; x < 5; x++) {
        for (let y = 0; y < 25; y += 5) a[x + y] = b[x + y] ^ (~b[((x + 1) % 5) + y] & MASK & b[((x + 2) % 5) + y]);
      }
      a[0] ^= RC[round];
    }
  }

  function keccak256(bytes) {
    const rate = 136;
    const padded = new Uint8Array(Math.floor(bytes.length / rate) * rate + rate);
    padded.set(bytes);
    padded[bytes.length] ^= 0x01;
    padded[padded.length - 1] ^= 0x80;
    const a = new Array(25).fill(0n);
    for (let offset = 0; offset < padded.length; offset += rate) {
      for (let i = 0; i < rate / 8; i++) {
        let lane = 0n;
        for (let j = 7; j >= 0; j--) lane = (lane << 8n) | BigInt(padded[offset + 8 * i + j]);
        a[i] ^= lane;
      }
      keccakF(a);
    }
    const out = new Uint8Array(32);
    for (let i = 0; i < 32; i++) out[i] = Number((a[i >> 3] >> BigInt(8 * (i & 7))) & 0xffn);
    return out;
  }

  function checksumAddress(address) {
    const hex = address.toLowerCase().replace(/^0x/, "");
    if (!/^[0-9a-f]{40}$/.test(hex)) throw pageError("wallet_error", `the wallet gave no EVM address: ${address}`);
    const hash = keccak256(new TextEncoder().encode(hex));
    let out = "0x";
    for (let i = 0; i < 40; i++) {
      const nibble = (hash[i >> 1] >> (i % 2 === 0 ? 4 : 0)) & 0x0f;
      out += nibble >= 8 ? hex[i].toUpperCase() : hex[i];
    }
    return out;
  }

  const utf8Hex = (text) =>
    "0x" + Array.from(new TextEncoder().encode(text), (byte) => byte.toString(16).padStart(2, "0")).join("");

  // --- the EIP-4361 message -----------------------------------------------------------------------------------
  function siweMessage({ domain, address, statement, uri, chainId, nonce, issuedAt }) {
    return [
      `${domain} wants you to sign in with your Ethereum account:`,
      address,
      "",
      statement,
      "",
      `URI: ${uri}`,
      "Version: 1",
      `Chain ID: ${chainId}`,
      `Nonce: ${nonce}`,
      `Issued At: ${issuedAt}`,
    ].join("\n");
  }

  // --- the flow -------------------------------------------------------------------------------------------------
  function pageError(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
  }

  function walletError(error) {
    if (error && error.code === 4001) return pageError("wallet_rejected", "the wallet's owner declined the request");
    if (error && error.code === 4902) return pageError("siwe_wrong_chain", error.message || "unknown chain");
    return pageError("wallet_error", (error && error.message) || String(error));
  }

  async function wallet(method, params) {
    try {
      return await window.ethereum.request(params === undefined ? { method } : { method, params });
    } catch (error) {
      throw walletError(error);
    }
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function postJson(url, body) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(body),
      });
    } catch (error) {
      throw pageError("network_error", `the desk did not answer (${error.message})`);
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    if (!response.ok) {
      throw pageError((data && data.code) || `http_${response.status}`, (data && data.message) || response.statusText);
    }
    return data;
  }

  async function signIn(button, say) {
    if (!window.ethereum || typeof window.ethereum.request !== "function") {
      throw pageError("no_wallet", "no EVM wallet in this browser (install one, or open this page in the wallet's browser)");
    }
    say("Asking the wallet for its account…");
    const accounts = await wallet("eth_requestAccounts");
    if (!accounts || accounts.length === 0) throw pageError("wallet_error", "the wallet shared no account");
    const address = checksumAddress(accounts[0]);
    const walletChainId = parseInt(await wallet("eth_chainId"), 16);

    say("Asking the desk for a one-time number…");
    const nonce = await postJson(button.dataset.nonceUrl, {});
    if (walletChainId !== nonce.chain_id) {
      throw pageError(
        "siwe_wrong_chain",
        `the wallet is on chain ${walletChainId}; switch it to chain ${nonce.chain_id} and try again`,
      );
    }
    const message = siweMessage({
      domain: nonce.domain,
      address,
      statement: button.dataset.statement,
      uri: `${nonce.uri}/`,
      chainId: nonce.chain_id,
      nonce: nonce.nonce,
      issuedAt: new Date().toISOString(),
    });

    say("Sign the message in your wallet…");
    const signature = await wallet("personal_sign", [utf8Hex(message), accounts[0]]);

    say("Checking the signature…");
    await postJson(button.dataset.siweUrl, { message, signature });
    say("Signed in. Opening your page…");
    window.location.assign(button.dataset.next || "/");
  }

  function start() {
    const button = document.getElementById("connect-wallet");
    if (!button) return;
    const status = document.getElementById("signin-status");
    const errorBox = document.getElementById("signin-error");
    const say = (text) => {
      status.textContent = text;
    };
    button.addEventListener("click", async () => {
      button.disabled = true;
      errorBox.hidden = true;
      try {
        await signIn(button, say);
      } catch (error) {
        say("");
        errorBox.querySelector(".error-code").textContent = error.code || "error";
        errorBox.querySelector(".error-message").textContent = error.message;
        errorBox.hidden = false;
        button.disabled = false;
      }
    });
  }

  // For the unit check of the checksum (loans/tests/browser): no secret here, only pure functions.
  window.loansSignIn = { keccak256, checksumAddress, siweMessage };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
