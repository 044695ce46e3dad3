// The bell's live count: Server-Sent Events from the API, which takes the panel's session cookie.
// Without JavaScript the count is the one rendered with the page.
(function () {
  "use strict";
  var count = document.getElementById("bell-count");
  if (!count || !window.EventSource) return;
  var bell = count.closest(".bell");
  function show(unread) {
    count.textContent = String(unread);
    bell.classList.toggle("unread", unread > 0);
    // the page's two forms from the catalog; English and Hungarian both say "one" for 1 only
    var label = unread === 1 ? bell.dataset.one : bell.dataset.other;
    bell.setAttribute("aria-label", label.replace("#", String(unread)));
  }
  var source = new EventSource("/api/v1/notifications/stream");
  ["unread", "notification"].forEach(function (name) {
    source.addEventListener(name, function (event) { show(JSON.parse(event.data).unread); });
  });
})();
