// mt-dashboard: the only script (CSP: script-src 'self'). It ticks the withdrawal countdowns
// every second and reloads pages that ask for it, unless the user is typing. Everything works
// without it; it never builds HTML from data (textContent only).
(function () {
  "use strict";
  var body = document.body;
  var skewMs = Number(body.dataset.now || 0) * 1000 - Date.now();

  function duration(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + sec + "s";
    return sec + "s";
  }

  function tick() {
    var now = Date.now() + skewMs;
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var left = Math.max(0, Math.round((Number(el.dataset.due) * 1000 - now) / 1000));
      el.textContent = left === 0 ? "due now" : "in " + duration(left);
    });
  }

  tick();
  setInterval(tick, 1000);

  var refresh = Number(body.dataset.refresh || 0);
  if (refresh > 0) {
    setInterval(function () {
      var a = document.activeElement;
      var typing = a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
      var open = document.querySelector("details[open]");
      if (!typing && !open) location.reload();
    }, refresh * 1000);
  }
})();
