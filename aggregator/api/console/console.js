// The console's only script: the token (kept in this browser's localStorage), calls to the API.
"use strict";

const v2x = {
  token() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) { localStorage.setItem("v2x-token", fromHash); history.replaceState(null, "", location.pathname); }
    return localStorage.getItem("v2x-token") || "";
  },
  async api(method, path, body) {
    const options = { method, headers: { Authorization: "Bearer " + v2x.token() } };
    if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
    const response = await fetch("/api/v1" + path, options);
    const data = await response.json().catch(() => ({ error: response.statusText }));
    if (!response.ok) {
      const fields = (data.fields || []).map(f => f.field + ": " + f.message).join("; ");
      throw new Error(response.status + " " + (data.error || "") + (fields ? " (" + fields + ")" : ""));
    }
    return data;
  },
  text(id, value) { document.getElementById(id).textContent = value; },
  fmt(value, digits = 1, unit = "") {
    return value === null || value === undefined ? "–" : Number(value).toFixed(digits) + (unit ? " " + unit : "");
  },
  when(iso) { return iso ? new Date(iso).toLocaleString([], { timeZoneName: "short" }) : "–"; },
  // <input type="datetime-local"> works in local time; the API in UTC with an offset.
  toLocalInput(iso) {
    const d = new Date(iso);
    const pad = n => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  },
  fromLocalInput(value) { return new Date(value).toISOString(); },
  status(message, kind) {
    const el = document.getElementById("status");
    el.textContent = message;
    el.className = "status " + (kind || "");
  },
  row(cells) {
    const tr = document.createElement("tr");
    for (const [value, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    return tr;
  },
  fill(tbodyId, rows) {
    const body = document.getElementById(tbodyId);
    body.replaceChildren(...rows.map(v2x.row));
  },
  tokenForm() {
    document.getElementById("token-form").addEventListener("submit", e => {
      e.preventDefault();
      localStorage.setItem("v2x-token", document.getElementById("token").value.trim());
      location.reload();
    });
  },
};
