// A loan page that updates itself (templates/loans/{borrower,lender}/loan.html). The page holds one element marked
// data-live, outside the partial it follows: data-live is the socket's path (e.g. /ws/loans/7/?page=borrower),
// data-live-target the partial's selector (e.g. #loan). loans.consumers.LoanConsumer sends that same partial,
// re-rendered by the page's own view, each time the loan's status changes; it is swapped in whole (outerHTML), as
// an htmx poll swaps it.
//
// The data-live element is also the page's htmx poll (hx-get the page, hx-trigger="every 15s", hx-target the
// partial, hx-swap="outerHTML"): while the socket is open those polls are cancelled; while it is down (never opened,
// dropped, refused) they run, and the socket is retried with a growing delay. A poll is skipped too while the
// reader is typing into the partial (the swap would wipe the input). data-live-state on the element says "open" or
// "closed". No inline script: everything comes from data-* attributes.
(function () {
  "use strict";

  var open = false;
  var delay = 1000;
  var MAX_DELAY = 60000;

  function control() {
    return document.querySelector("[data-live]");
  }

  function target() {
    var element = control();
    return element && element.dataset.liveTarget ? document.querySelector(element.dataset.liveTarget) : null;
  }

  function mark() {
    var element = control();
    if (element) element.dataset.liveState = open ? "open" : "closed";
  }

  function socketUrl(path) {
    return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + path;
  }

  function typing(element) {
    var fields = element.querySelectorAll("input, textarea");
    for (var i = 0; i < fields.length; i++) {
      var field = fields[i];
      if (field.type === "hidden" || field.type === "submit" || field.type === "button") continue;
      if (field.value !== field.defaultValue) return true;
    }
    return false;
  }

  var pending = null; // the newest pushed partial, held while the borrower's signer is busy on the page

  function swapIn(html) {
    var element = target();
    if (!element) return;
    if (document.querySelector("[data-signer-busy]")) {
      // Never swap away what the borrower is reviewing or signing (borrower.js marks it): apply the newest
      // partial once the signer is done.
      var waiting = pending !== null;
      pending = html;
      if (!waiting) {
        var retry = function () {
          if (document.querySelector("[data-signer-busy]")) { setTimeout(retry, 500); return; }
          var latest = pending;
          pending = null;
          swapIn(latest);
        };
        setTimeout(retry, 500);
      }
      return;
    }
    if (window.htmx && typeof window.htmx.swap === "function") {
      window.htmx.swap(element, html, { swapStyle: "outerHTML" });
    } else {
      element.outerHTML = html;
    }
  }

  function connect() {
    var element = control();
    if (!element || !window.WebSocket) return;
    var socket = new WebSocket(socketUrl(element.dataset.live));
    socket.addEventListener("open", function () {
      open = true;
      delay = 1000;
      mark();
    });
    socket.addEventListener("message", function (event) {
      var data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      if (data && typeof data.html === "string") swapIn(data.html);
    });
    socket.addEventListener("close", function (event) {
      open = false;
      mark();
      // 4401/4403/4404: the page is not (or no longer) the caller's to follow: polling alone, no retry.
      if (event.code >= 4400 && event.code < 4500) return;
      window.setTimeout(connect, delay);
      delay = Math.min(delay * 2, MAX_DELAY);
    });
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.target;
    if (!element || !element.hasAttribute || !element.hasAttribute("data-live")) return;
    var followed = target();
    if (open || (followed && typing(followed))) event.preventDefault();
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", connect);
  } else {
    connect();
  }
})();
