// Loaded on every page (templates/base.html). No inline script anywhere: the Content-Security-Policy forbids it.
//
// CSRF for htmx: every request htmx makes carries the token of <meta name="csrf-token"> as X-CSRFToken. (An
// hx-headers attribute on <body> would do the same in htmx 2, but htmx 4 no longer inherits it.)
document.addEventListener("htmx:configRequest", (event) => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) {
    event.detail.headers["X-CSRFToken"] = meta.content;
  }
});
