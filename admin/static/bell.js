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
    bell.setAttribute("aria-label", unread + " unread notifications");
  }
  var source = new EventSource("/api/v1/notifications/stream");
  ["unread", "notification"].forEach(function (name) {
    source.addEventListener(name, function (event) { show(JSON.parse(event.data).unread); });
  });
})();
