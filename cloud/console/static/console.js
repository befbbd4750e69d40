// EdgeFleet console: the only script. Pages with data-refresh reload themselves every N seconds (not while
// someone types in a form), and buttons of dangerous actions ask first.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  var editing = false;
  document.addEventListener("input", function () { editing = true; });
  if (seconds > 0) {
    setInterval(function () {
      var active = document.activeElement;
      var typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT" || active.tagName === "TEXTAREA");
      var still = document.body.hasAttribute("data-refresh");  // removing the attribute stops it
      if (still && !editing && !typing && document.visibilityState === "visible") { window.location.reload(); }
    }, seconds * 1000);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
})();
