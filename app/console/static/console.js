// The console's only script of its own. Live regions (`data-live`) poll their page with htmx every few seconds;
// a poll is skipped while the page is hidden, or while the keyboard focus is inside the region, so a refresh never
// pulls a control away from someone using it. The WebSocket stream will replace these polls (docs/console.md).
document.addEventListener("htmx:beforeRequest", function (event) {
  var region = event.detail.elt;
  if (!region || !region.hasAttribute || !region.hasAttribute("data-live")) {
    return;
  }
  if (document.hidden || region.contains(document.activeElement)) {
    event.preventDefault();
  }
});
