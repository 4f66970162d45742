// The status page: polls api/status and redraws each session card in place (no reload).
// Every value is written with textContent, never as HTML.
"use strict";
(function () {
  const refresh = Math.max(0.2, Number(document.body.dataset.refresh) || 1) * 1000;
  const cards = new Map();
  let svgSource = null;
  document.body.dataset.loadId = String(Math.random()).slice(2);
  document.body.dataset.updates = "0";

  function seconds(v) {
    if (v === null || v === undefined) return "\u2013";
    const s = Math.round(v), sign = s < 0 ? "-" : "", a = Math.abs(s);
    const h = Math.floor(a / 3600), m = Math.floor((a % 3600) / 60), r = a % 60;
    return sign + (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }

  function cause(t) {
    const parts = [];
    if (t.error) parts.push(t.error);
    if (t.status !== null) parts.push("HTTP " + t.status);
    if (t.fault_code !== null) parts.push("fault " + t.fault_code);
    if (t.reason) parts.push("(" + t.reason + ")");
    return parts.join(" ");
  }

  function card(view) {
    let el = cards.get(view.session_id);
    if (el) return el;
    el = document.getElementById("card").content.firstElementChild.cloneNode(true);
    el.dataset.session = view.session_id;
    if (svgSource) {
      const doc = new DOMParser().parseFromString(svgSource, "image/svg+xml");
      el.querySelector(".svg").appendChild(document.importNode(doc.documentElement, true));
    }
    document.getElementById("sessions").appendChild(el);
    cards.set(view.session_id, el);
    return el;
  }

  function set(el, field, text) {
    el.querySelector('[data-field="' + field + '"]').textContent = text;
  }

  function mark(el, cls, id) {
    el.querySelectorAll("." + cls).forEach((n) => n.classList.remove(cls));
    if (!id) return;
    const n = el.querySelector('.svg [id="' + id + '"]');
    if (n) n.classList.add(cls);
  }

  function draw(view) {
    const el = card(view);
    set(el, "userid", view.userid);
    set(el, "session_id", view.session_id);
    set(el, "state", view.state);
    el.querySelector('[data-field="state"]').className = "state " + (view.healthy ? "healthy" : "unhealthy");
    set(el, "health", view.healthy ? "healthy" : view.reason);
    set(el, "generation", String(view.generation));
    set(el, "age", seconds(view.age_seconds));
    set(el, "soft", seconds(view.soft_deadline_in));
    set(el, "hard", seconds(view.hard_deadline_in));
    set(el, "fingerprint", view.token_fingerprint || "\u2013");
    set(el, "waiters", String(view.relogin_waiters));
    set(el, "host", view.host);
    const body = el.querySelector(".transitions tbody");
    const rows = view.transitions.map((t) => {
      const tr = document.createElement("tr");
      tr.className = t.outcome;
      [t.time.replace("T", " ").replace("+00:00", ""), t.trigger, t.src + " \u2192 " + t.dst,
       t.outcome, cause(t)].forEach((text) => {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      });
      return tr;
    });
    body.replaceChildren(...rows);
    const d = view.diagram;
    mark(el, "current", d.current);
    mark(el, "marked", d.mark);
    mark(el, "failed-here", d.marker ? d.marker_state : null);
    set(el, "marker", d.marker ? "last: " + d.marker : "");
  }

  async function tick() {
    try {
      const r = await fetch("api/status", { cache: "no-store" });
      const data = await r.json();
      data.sessions.forEach(draw);
      const overall = document.getElementById("overall");
      overall.textContent = data.healthy ? "healthy" : "unhealthy";
      overall.className = "badge " + (data.healthy ? "ok" : "bad");
      document.getElementById("link").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
    } catch (e) {
      document.getElementById("link").textContent = "cannot reach the bot (" + e + ")";
    }
    setTimeout(tick, refresh);
  }

  fetch("diagram.svg").then((r) => r.text()).then((t) => { svgSource = t; })
    .catch(() => { svgSource = null; }).finally(tick);
})();
