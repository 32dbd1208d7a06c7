// alert-bridge console auto-refresh (no dependencies). A <main data-refresh="N"> is re-fetched every
// N seconds from the same URL, query string included, so the operator's filters stay; only <main>
// is swapped. Skipped while the operator is typing in a field or the tab is hidden.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !main.dataset.refresh) { return; }
  var every = Math.max(5, parseInt(main.dataset.refresh, 10) || 15) * 1000;
  function busy() {
    var el = document.activeElement;
    return document.hidden || (el && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));
  }
  function tick() {
    if (busy()) { return; }
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.redirected || !r.ok) { window.location.reload(); return null; }
        return r.text();
      })
      .then(function (text) {
        if (text === null) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
        if (fresh) { main.innerHTML = fresh.innerHTML; }
      })
      .catch(function () { /* the bridge restarting: try again next time */ });
  }
  window.setInterval(tick, every);
}());
