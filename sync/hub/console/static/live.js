// The live view: each decision the hub stores, prepended to the table as it arrives (SSE).
"use strict";
(function () {
  const body = document.getElementById("live-rows");
  const state = document.getElementById("live-state");
  const columns = body.dataset.columns.split(",");
  const source = new EventSource("/live/stream");
  source.onopen = function () { state.textContent = "connected"; };
  source.onerror = function () { state.textContent = "reconnecting…"; };
  source.addEventListener("decision", function (event) {
    const data = JSON.parse(event.data);
    const row = document.createElement("tr");
    row.className = "decision decision-" + String(data.decision);
    for (const c of columns) {
      const cell = document.createElement("td");
      cell.textContent = data[c] === null || data[c] === undefined ? "-" : String(data[c]);  // text, never HTML
      row.appendChild(cell);
    }
    body.insertBefore(row, body.firstChild);
    while (body.children.length > 200) body.removeChild(body.lastChild);
  });
})();
