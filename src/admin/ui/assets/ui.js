// tracecheck's live page: verdicts from /ui/live/events (server-sent
// events), newest first. Values are set as text, never as HTML.
"use strict";

(function () {
  if (document.body.dataset.page !== "live") {
    return;
  }
  var rows = document.getElementById("live-rows");
  var status = document.getElementById("live-status");
  var MAX_ROWS = 500;
  var seen = 0;
  var source = new EventSource("/ui/live/events" + window.location.search);

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  source.addEventListener("open", function () {
    status.textContent = "connected; waiting for verdicts";
  });
  source.addEventListener("error", function () {
    status.textContent = "disconnected; retrying";
  });
  source.addEventListener("missed", function (e) {
    status.textContent = "this page fell behind and missed " + e.data + " verdicts";
  });
  source.addEventListener("verdict", function (e) {
    var v = JSON.parse(e.data);
    var tr = document.createElement("tr");
    tr.className = "live-verdict";
    cell(tr, v.at.replace("T", " "));
    var badge = document.createElement("span");
    badge.className = "verdict " + v.verdict;
    badge.textContent = v.verdict;
    cell(tr, "").appendChild(badge);
    cell(tr, v.model);
    var link = document.createElement("a");
    link.href = "/ui/trace/" + encodeURIComponent(v.trace_id);
    link.textContent = v.trace_id;
    cell(tr, "").appendChild(link);
    cell(tr, v.what || "");
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > MAX_ROWS) {
      rows.removeChild(rows.lastChild);
    }
    seen += 1;
    status.textContent = "connected; " + seen + " verdicts since this page opened";
  });
})();
