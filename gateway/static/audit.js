// The compliance officer's audit page. The bearer token comes in the URL fragment (#token=…),
// which browsers never send to a server or write to its logs; every number is fetched from
// /admin/audit/data with that token, so the page itself holds no data.
"use strict";
const NS = "http://www.w3.org/2000/svg";

function state() {
  return new URLSearchParams(location.hash.slice(1));
}

function bars(svg, pairs) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const total = pairs.reduce((sum, p) => sum + p[1], 0);
  svg.dataset.total = String(total);
  svg.dataset.bars = String(pairs.length);
  const width = svg.clientWidth || 900, height = svg.clientHeight || 220;
  const max = Math.max(1, ...pairs.map(p => p[1]));
  const step = pairs.length ? width / pairs.length : width;
  pairs.forEach(([label, value], i) => {
    const h = (height - 30) * value / max;
    const rect = document.createElementNS(NS, "rect");
    rect.setAttribute("x", String(i * step + 2));
    rect.setAttribute("y", String(height - 20 - h));
    rect.setAttribute("width", String(Math.max(1, step - 4)));
    rect.setAttribute("height", String(h));
    rect.dataset.label = label;
    rect.dataset.value = String(value);
    svg.appendChild(rect);
    const text = document.createElementNS(NS, "text");
    text.setAttribute("x", String(i * step + 2));
    text.setAttribute("y", String(height - 6));
    text.textContent = `${label} (${value})`;
    svg.appendChild(text);
  });
}

function table(element, rows) {
  // textContent only: agents and details are data, never markup.
  const body = element.querySelector("tbody");
  while (body.firstChild) body.removeChild(body.firstChild);
  element.dataset.rows = String(rows.length);
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.kind = row.kind;
    for (const key of ["kind", "agent", "day", "count", "baseline", "detail"]) {
      const td = document.createElement("td");
      td.textContent = String(row[key] ?? "");
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

async function load() {
  const params = state();
  const query = new URLSearchParams();
  for (const key of ["agent", "from", "to"]) {
    if (params.get(key)) query.set(key, params.get(key));
    const input = document.querySelector(`input[name=${key}]`);
    if (input) { input.value = params.get(key) || ""; input.setAttribute("value", input.value); }
  }
  const status = document.getElementById("status");
  const reply = await fetch(`/admin/audit/data?${query}`, {
    headers: { Authorization: `Bearer ${params.get("token") || ""}` },
  });
  if (!reply.ok) {
    status.textContent = `Not allowed (${reply.status}): sign in as a compliance officer.`;
    document.body.dataset.state = "denied";
    return;
  }
  const data = await reply.json();
  bars(document.getElementById("over-time"), data.over_time);
  bars(document.getElementById("top-agents"), data.top_agents);
  bars(document.getElementById("denials"), data.denials);
  table(document.getElementById("anomalies"), data.anomalies || []);
  status.textContent = `${data.total} audit records`;
  document.body.dataset.state = "loaded";
}

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = state();
  for (const [key, value] of new FormData(event.target)) {
    if (value) params.set(key, value); else params.delete(key);
  }
  location.hash = params.toString();
});
window.addEventListener("hashchange", load);
load();
