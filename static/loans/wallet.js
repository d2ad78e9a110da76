// Contract calls from the borrower's EVM wallet (EIP-1193): ask the API to prepare the call (its endpoint is the
// section's data-endpoint), send its wallet_request with eth_sendTransaction, then report the hash to the API
// (data-report). No inline script: everything comes from data-* attributes. pB, when a call needs it, is read from
// the section's [data-borrower-preimage] input and sent only inside the transaction the wallet signs.
(function () {
  "use strict";

  function say(section, text) {
    var out = section.querySelector("[data-wallet-status]");
    if (out) out.textContent = text;
  }

  function post(url, csrf, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) {
          var error = new Error((data.code || response.status) + ": " + (data.message || "refused"));
          throw error;
        }
        return data;
      });
    });
  }

  function send(section) {
    var provider = window.ethereum;
    if (!provider || typeof provider.request !== "function") {
      say(section, "No EVM wallet found in this browser.");
      return;
    }
    var csrf = section.dataset.csrf;
    say(section, "Preparing the call...");
    post(section.dataset.endpoint, csrf, { send: false })
      .then(function (call) {
        var request = Object.assign({}, call.prepared.wallet_request);
        if (call.prepared.needs === "borrower_preimage") {
          var input = section.querySelector("[data-borrower-preimage]");
          var preimage = input ? input.value.trim().toLowerCase().replace(/^0x/, "") : "";
          if (!/^[0-9a-f]{64}$/.test(preimage)) throw new Error("pB must be 64 hex characters");
          request.data = request.data + preimage;
        }
        say(section, "Confirm the transaction in your wallet...");
        return provider
          .request({ method: "eth_requestAccounts" })
          .then(function () {
            return provider.request({ method: "eth_sendTransaction", params: [request] });
          });
      })
      .then(function (txHash) {
        say(section, "Sent " + txHash + "; recording it...");
        return post(section.dataset.report, csrf, { tx_hash: txHash }).then(function (row) {
          say(section, "Sent " + row.tx_hash + " (" + row.status + "). The page follows the chain.");
          section.dispatchEvent(new CustomEvent("wallet:sent", { bubbles: true, detail: row }));
        });
      })
      .catch(function (error) {
        say(section, "Not sent: " + (error && error.message ? error.message : error));
      });
  }

  function wire(root) {
    root.querySelectorAll("[data-wallet-call]").forEach(function (section) {
      var button = section.querySelector("[data-wallet-send]");
      if (!button || button.dataset.wired) return;
      button.dataset.wired = "1";
      button.hidden = false;
      button.addEventListener("click", function () {
        send(section);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    wire(event.target);
  });
})();
