// Clicking a count in the summary shows only the notebooks with that status, in the timeline and the
// table; clicking it again (or "notebooks") shows all. The page works without this script.
(function () {
  var buttons = document.querySelectorAll("#summary .count");
  var rows = document.querySelectorAll("#steps > tbody > tr.step, #timeline .tl-body .tl-row");
  var current = "";
  function show(status) {
    current = status === current ? "" : status;
    rows.forEach(function (row) {
      row.classList.toggle("hidden", current !== "" && row.getAttribute("data-status") !== current);
    });
    buttons.forEach(function (button) {
      button.classList.toggle("active", current !== "" && button.getAttribute("data-status") === current);
    });
  }
  buttons.forEach(function (button) {
    button.addEventListener("click", function () { show(button.getAttribute("data-status") || ""); });
  });
  document.documentElement.setAttribute("data-filter", "ready");
})();
