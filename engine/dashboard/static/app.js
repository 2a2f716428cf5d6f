// ChargeBridge dashboard: live channel counts, confirmations and actions. Plain JS, no
// dependencies, no build step. Every state-changing call sends the session's CSRF token.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  function fmtTime(seconds) {
    if (!seconds) return "";
    return new Date(Number(seconds) * 1000).toLocaleString();
  }

  function fmtAge(seconds) {
    if (seconds === "" || seconds === null || seconds === undefined) return "";
    let s = Math.max(0, Math.round(Number(seconds)));
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function fmtBytes(n) {
    if (!n) return "unknown";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0, v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + units[i];
  }

  function sparkline(values) {
    const max = Math.max(1, ...values);
    const w = 120, h = 24, step = w / Math.max(1, values.length - 1);
    const pts = values.map((v, i) => (i * step).toFixed(1) + "," + (h - (v / max) * h).toFixed(1));
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    const title = document.createElementNS(ns, "title");
    title.textContent = values[values.length - 1] + " in the last minute, max " + max + "/min";
    svg.appendChild(title);
    return svg;
  }

  function renderDerived(root) {
    root.querySelectorAll("[data-time]").forEach((el) => { el.textContent = fmtTime(el.dataset.time); });
    root.querySelectorAll("[data-age]").forEach((el) => { el.textContent = fmtAge(el.dataset.age); });
    root.querySelectorAll("[data-bytes]").forEach((el) => { el.textContent = fmtBytes(el.dataset.bytes); });
    root.querySelectorAll('[data-field="per_minute"]').forEach((el) => {
      const values = (el.dataset.values || "").split(",").filter((v) => v !== "").map(Number);
      el.replaceChildren(sparkline(values.length ? values : [0]));
    });
  }

  function showResult(text, ok) {
    const box = document.getElementById("result");
    box.hidden = false;
    box.className = ok ? "ok" : "error";
    box.textContent = text;
  }

  async function call(url, method, body) {
    const resp = await fetch(url, {
      method: method || "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    return { ok: resp.ok, status: resp.status, data: data };
  }

  function describe(res) {
    if (!res.data) return "HTTP " + res.status;
    if (res.data.results) {
      return res.data.action + ": " + res.data.results.map((r) => r.id + " " + r.outcome).join("; ");
    }
    if (res.data.detail) return typeof res.data.detail === "string" ? res.data.detail : JSON.stringify(res.data.detail);
    if (res.data.outcome) return res.data.outcome + (res.data.new_message_id ? " (message " + res.data.new_message_id + ")" : "");
    return "done";
  }

  async function act(button, url, method, body) {
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const res = await call(url, method, body);
    const ok = res.ok && (!res.data || !res.data.results || res.data.failed === 0);
    showResult(describe(res), ok);
    button.disabled = false;
    if (res.ok && button.dataset.reload !== "no") setTimeout(() => window.location.reload(), 900);
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action], button[data-bulk], button[data-edit]");
    if (!button) {
      const all = ev.target.closest("input.select-all");
      if (all) all.closest("table").querySelectorAll("input.select-row").forEach((c) => { c.checked = all.checked; });
      return;
    }
    ev.preventDefault();
    if (button.dataset.action) {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      act(button, button.dataset.action, button.dataset.method || "POST", body);
    } else if (button.dataset.bulk) {
      const ids = Array.from(document.querySelectorAll("input.select-row:checked")).map(
        (c) => (button.dataset.int ? Number(c.value) : c.value));
      if (!ids.length) { showResult("Select at least one row first.", false); return; }
      const label = button.dataset.confirm || "Apply to the selected rows?";
      button.dataset.confirm = label.replace(/\?$/, "") + " (" + ids.length + ")?";
      act(button, button.dataset.bulk, "POST", { [button.dataset.key]: ids }).finally(() => { button.dataset.confirm = label; });
    } else if (button.dataset.edit) {
      const raw = document.getElementById("edit-raw").value;
      act(button, button.dataset.edit, "POST", { raw: raw });
    }
  });

  document.addEventListener("submit", (ev) => {
    const form = ev.target;
    if (!form.dataset.json) return;
    ev.preventDefault();
    const body = Object.fromEntries(new FormData(form).entries());
    act(form.querySelector("button"), form.dataset.json, "POST", body);
  });

  async function pollChannels() {
    try {
      const resp = await fetch("/api/channels", { credentials: "same-origin" });
      if (resp.status === 401) { window.location = "/login"; return; }
      if (resp.ok) {
        for (const c of await resp.json()) {
          const row = document.querySelector('tr[data-channel="' + CSS.escape(c.name) + '"]');
          if (!row) continue;
          for (const key of ["state", "received", "filtered", "held", "error", "queued", "sent", "failed"]) {
            const cell = row.querySelector('[data-field="' + key + '"]');
            if (cell && cell.textContent !== String(c[key])) cell.textContent = c[key];
          }
          row.querySelector('[data-field="per_minute"]').dataset.values = c.per_minute.join(",");
          row.querySelector('[data-field="last_message_at"]').dataset.time = c.last_message_at || "";
          row.querySelector('[data-field="oldest_queued_age_seconds"]').dataset.age =
            c.oldest_queued_age_seconds === null ? "" : c.oldest_queued_age_seconds;
        }
        renderDerived(document.getElementById("channels"));
      }
    } catch (e) { /* the next poll retries */ }
    setTimeout(pollChannels, 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    renderDerived(document);
    if (document.body.dataset.page === "channels") setTimeout(pollChannels, 2000);
  });
})();
