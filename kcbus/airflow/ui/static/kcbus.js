// kcbus operator view: talks only to ../api/v1 (same origin, Airflow's login cookie).
// Every value from the API is put into the page with textContent, never as HTML.
"use strict";

(() => {
  const API = new URL("../api/v1/", window.location.href);
  const PAGE_SIZE = 50;
  const AUTO_REFRESH_MS = 60_000;
  const STATUS_COLORS = {
    RECEIVED: "#7a9cc6", OPENED: "#5b8bd0", VALIDATED: "#3f78d6", ROUTED: "#2563c9",
    DELIVERED: "#12a150", ACKNOWLEDGED: "#067647", REJECTED: "#dc6803", DUPLICATE: "#98a2b3",
    RETRYING: "#eaaa08", DEAD: "#d92d20",
  };
  const PALETTE = ["#2563c9", "#12a150", "#dc6803", "#7a5af8", "#d92d20", "#0e9384",
    "#c11574", "#eaaa08", "#475467", "#4e5ba6"];
  const ENDED_OK = new Set(["DELIVERED", "ACKNOWLEDGED"]);
  const RESENDABLE = new Set(["DEAD", "RETRYING"]);

  const $ = (sel) => document.querySelector(sel);
  const state = { me: null, filter: null, offset: 0, detail: null, taskContext: null, total: "0" };

  // ---------------------------------------------------------------- helpers

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, { method = "GET", params = null, body = null } = {}) {
    const url = new URL(path, API);
    if (params) {
      for (const [key, value] of Object.entries(params)) {
        if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
      }
    }
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== null) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      let detail = data && data.detail !== undefined ? data.detail : response.statusText;
      if (Array.isArray(detail)) detail = detail.map((d) => d.msg).join("; ");
      throw new ApiError(response.status, String(detail));
    }
    return data;
  }

  function notice(text, isError = false) {
    const box = $("#notice");
    box.textContent = text;
    box.classList.toggle("error", isError);
    box.hidden = !text;
  }

  function fail(err) {
    if (err instanceof ApiError && err.status === 401) {
      const box = $("#notice");
      const login = new URL("/auth/login", window.location.href);
      login.searchParams.set("next", window.location.href);
      box.replaceChildren("You are not logged in to Airflow. ",
        el("a", { href: login.toString(), target: "_top" }, "Log in"));
      box.classList.add("error");
      box.hidden = false;
    } else {
      notice(err.message || String(err), true);
    }
  }

  const fmtTime = (iso) => (iso ? new Date(iso).toLocaleString() : "—");
  const statusBadge = (status) => el("span", {
    class: "status", style: `background:${STATUS_COLORS[status] || "#667085"}`,
  }, status);
  const label = (m) => {
    const id = m.uuid || m.ref;
    return m.kind === "receipt" ? `${id} (receipt: ${m.receipt_type || "?"})` : id;
  };
  const route = (m) => `${m.sender || "?"} → ${m.recipient || "?"}`;

  function isoFromLocal(value) {
    return value ? new Date(value).toISOString() : null;
  }

  // ---------------------------------------------------------------- who am I

  async function loadMe() {
    const me = await api("me");
    state.me = me;
    $("#who").textContent = `${me.user} · ${me.can_edit ? "may re-send and resolve" : "read only"}`;
    document.body.classList.toggle("read-only", !me.can_edit);
    for (const select of document.querySelectorAll(".flow-select")) {
      for (const flow of me.flows) select.append(el("option", { value: flow }, flow));
    }
    for (const select of document.querySelectorAll(".status-select")) {
      for (const status of me.statuses) select.append(el("option", { value: status }, status));
    }
  }

  // ---------------------------------------------------------------- chart

  const RANGES = { "1h": [3600e3, "minute"], "24h": [86400e3, "hour"],
    "7d": [7 * 86400e3, "day"], "30d": [30 * 86400e3, "day"] };

  async function loadChart() {
    const form = new FormData($("#chart-form"));
    const [span, bucket] = RANGES[form.get("range")];
    const until = new Date();
    const since = new Date(until.getTime() - span);
    const counts = await api("counts", { params: {
      since: since.toISOString(), until: until.toISOString(), bucket,
      group_by: form.get("group_by"), flow: form.get("flow"),
    } });
    drawChart(counts);
  }

  function seriesColor(groupBy, key, index) {
    if (groupBy === "status" && STATUS_COLORS[key]) return STATUS_COLORS[key];
    return PALETTE[index % PALETTE.length];
  }

  function drawChart(counts) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 1000, H = 220, left = 44, right = 24, bottom = 22, top = 8;
    const n = counts.buckets.length;
    const totals = counts.buckets.map((_, i) => counts.series.reduce((s, x) => s + x.counts[i], 0));
    const max = Math.max(1, ...totals);
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const plotH = H - top - bottom;
    const bw = (W - left - right) / Math.max(n, 1);
    const mk = (tag, attrs, text) => {
      const node = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    for (const frac of [0, 0.5, 1]) {
      const y = top + plotH * (1 - frac);
      mk("line", { x1: left, x2: W - right, y1: y, y2: y, class: "gridline" });
      mk("text", { x: left - 6, y: y + 3, "text-anchor": "end", class: "axis" }, Math.round(max * frac));
    }
    const every = Math.max(1, Math.ceil(n / 8));
    counts.buckets.forEach((b, i) => {
      let y = top + plotH;
      counts.series.forEach((s, si) => {
        const v = s.counts[i];
        if (!v) return;
        const h = (v / max) * plotH;
        y -= h;
        const rect = mk("rect", { x: left + i * bw + 1, y, width: Math.max(bw - 2, 1), height: h,
          fill: seriesColor(counts.group_by, s.key, si) });
        const title = document.createElementNS(NS, "title");
        title.textContent = `${fmtTime(b)} · ${s.key}: ${v}`;
        rect.append(title);
      });
      if (i % every === 0) {
        const d = new Date(b);
        const label = counts.bucket === "day" ? d.toLocaleDateString()
          : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        mk("text", { x: left + i * bw + bw / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, label);
      }
    });
    const chart = $("#chart");
    chart.replaceChildren(svg);
    const legend = $("#legend");
    legend.replaceChildren(...counts.series.map((s, si) => el("li", {},
      el("i", { style: `background:${seriesColor(counts.group_by, s.key, si)}` }), `${s.key} (${s.total})`)));
    if (!counts.series.length) legend.replaceChildren(el("li", {}, "no messages in this range"));
  }

  // ---------------------------------------------------------------- failures

  async function loadFailures() {
    const page = await api("failures", { params: {
      include_resolved: $("#show-resolved").checked ? "true" : "false", limit: 100,
    } });
    const body = $("#failures-table tbody");
    body.replaceChildren(...page.items.map((m) => el("tr", { dataset: { ref: m.ref } },
      el("td", {}, fmtTime(m.received_at)),
      el("td", { class: "uuid" }, el("button", { class: "link", type: "button",
        onclick: () => openDetail(m.ref) }, label(m))),
      el("td", {}, m.flow || "—"),
      el("td", {}, route(m)),
      el("td", {}, m.message_type || "—"),
      el("td", {}, statusBadge(m.status), m.resolved ? " resolved" : ""),
      el("td", { class: "reason" }, [m.reason_code, m.reason].filter(Boolean).join(": ") || "—"),
      el("td", {}, actionButtons(m)),
    )));
    $("#failures-table").hidden = page.items.length === 0;
    $("#failures-empty").hidden = page.items.length !== 0;
  }

  function actionButtons(m) {
    const box = el("div", { class: "buttons" });
    if (!state.me || !state.me.can_edit) return box;
    // What the ledger can re-send: messages that were routed (REJECTED and DUPLICATE never
    // were; the sender must send a corrected message instead).
    if (RESENDABLE.has(m.status)) {
      box.append(el("button", { type: "button", class: "resend", onclick: () => resendOne(m.ref) }, "Re-send…"));
    }
    if (!m.resolved && !ENDED_OK.has(m.status)) {
      box.append(el("button", { type: "button", class: "resolve", onclick: () => resolveOne(m.ref) }, "Resolve…"));
    }
    return box;
  }

  // ---------------------------------------------------------------- search

  function readFilter() {
    const form = new FormData($("#search-form"));
    const filter = {};
    for (const key of ["uuid", "sender", "recipient", "message_type", "flow", "status"]) {
      const value = String(form.get(key) || "").trim();
      if (value) filter[key] = value;
    }
    const since = isoFromLocal(form.get("since"));
    const until = isoFromLocal(form.get("until"));
    if (since) filter.since = since;
    if (until) filter.until = until;
    return filter;
  }

  async function search(offset = 0) {
    state.offset = offset;
    const params = { ...state.filter, limit: PAGE_SIZE, offset };
    const page = await api("messages", { params });
    state.total = page.total_capped ? `more than ${page.total}` : String(page.total);
    const body = $("#results-table tbody");
    body.replaceChildren(...page.items.map((m) => el("tr", { dataset: { ref: m.ref } },
      el("td", {}, fmtTime(m.received_at)),
      el("td", { class: "uuid" }, el("button", { class: "link", type: "button",
        onclick: () => openDetail(m.ref) }, label(m))),
      el("td", {}, m.flow || "—"),
      el("td", {}, route(m)),
      el("td", {}, m.message_type || "—"),
      el("td", {}, statusBadge(m.status), m.resolved ? " resolved" : ""),
      el("td", {}, m.attempts),
      el("td", {}, actionButtons(m)),
    )));
    $("#results-table").hidden = page.items.length === 0;
    const more = page.total_capped ? "more than " : "";
    $("#search-summary").textContent = page.total === 0 ? "No message matches."
      : `${more}${page.total} matching; showing ${offset + 1}–${offset + page.items.length}.`;
    $("#pager").hidden = page.total <= PAGE_SIZE;
    $("#prev-page").disabled = offset === 0;
    $("#next-page").disabled = offset + page.items.length >= page.total;
    const resendable = state.me && state.me.can_edit && page.total > 0;
    $("#resend-matching").disabled = !resendable;
    // A search for one UUID that finds it opens its history straight away.
    if (state.filter.uuid && page.items.length === 1 && offset === 0) await openDetail(page.items[0].ref);
    return page;
  }

  // ---------------------------------------------------------------- detail / timeline

  async function openDetail(ref) {
    const detail = await api(`messages/${encodeURIComponent(ref)}`);
    state.detail = detail;
    const m = detail.message;
    $("#detail-uuid").textContent = label(m);
    const facts = [
      ["status", statusBadge(m.status)], ["flow", m.flow || "—"],
      ["from", m.sender || "—"], ["to", m.recipient || "—"],
      ["type", m.message_type || "—"], ["standard", [m.standard, m.version].filter(Boolean).join(" ") || "—"],
      ["received", fmtTime(m.received_at)], ["attempts", m.attempts],
      ["inspection", m.inspection || "—"], ["resolved", m.resolved ? "yes" : "no"],
      ["reason", [m.reason_code, m.reason].filter(Boolean).join(": ") || "—"],
      ["next attempt", fmtTime(m.next_attempt_at)],
    ];
    if (m.parent_ref) facts.push(["answers", el("button", { class: "link", type: "button",
      onclick: guard(() => openDetail(m.parent_ref)) }, m.parent_ref)]);
    $("#detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#timeline").replaceChildren(...detail.events.map((e) => el("li", {
      style: `--dot:${STATUS_COLORS[e.status] || "#667085"}`,
    },
      el("span", { class: "when" }, fmtTime(e.at)), " ",
      el("span", { class: "stage" }, e.stage), e.status ? statusBadge(e.status) : null, " ",
      el("span", { class: "actor" }, [e.destination ? `to ${e.destination}` : "",
        e.actor ? `by ${e.actor}` : ""].filter(Boolean).join(" · ")),
      e.reason_code ? el("span", { class: "detail" }, `reason: ${e.reason_code}`) : null,
      e.detail ? el("span", { class: "detail" }, e.detail) : null,
    )));
    $("#deliveries").replaceChildren(...detail.deliveries.map((d) => el("li", {},
      el("b", {}, d.destination), " ", statusBadge(d.status),
      ` · ${d.attempts} attempt(s)`,
      d.delivered_at ? ` · delivered ${fmtTime(d.delivered_at)}` : "",
      d.next_attempt_at ? ` · next attempt ${fmtTime(d.next_attempt_at)}` : "",
      d.last_error_code || d.last_error ? el("span", { class: "detail" },
        [d.last_error_code, d.last_error].filter(Boolean).join(": ")) : null)));
    $("#deliveries-head").hidden = detail.deliveries.length === 0;
    $("#receipts").replaceChildren(...detail.receipts.map((r) => el("li", {},
      el("button", { class: "link", type: "button", onclick: guard(() => openDetail(r.ref)) },
        `${r.receipt_type || "receipt"} ${r.ref}`), " ", statusBadge(r.status))));
    $("#receipts-head").hidden = detail.receipts.length === 0;
    const canEdit = state.me && state.me.can_edit;
    $("#detail-resend").hidden = !canEdit || !(RESENDABLE.has(m.status) || ENDED_OK.has(m.status));
    $("#detail-resolve").hidden = !canEdit || m.resolved || ENDED_OK.has(m.status);
    $("#detail-content").hidden = !detail.content_viewable;
    const notes = { "end-to-end": "Content is sealed end to end for the recipient: the bus cannot and will not show it.",
      disabled: "Showing content is switched off for this flow.",
      permission: "Showing content needs edit access to this flow." };
    $("#detail-content-note").textContent = detail.content_refusal ? notes[detail.content_refusal] || "" : "";
    $("#detail-content-text").hidden = true;
    $("#detail-content-text").textContent = "";
    $("#detail").hidden = false;
    $("#detail").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // ---------------------------------------------------------------- actions

  function askReason(title, text) {
    const dialog = $("#action-dialog");
    $("#action-title").textContent = title;
    $("#action-text").textContent = text;
    $("#action-reason").value = "";
    $("#action-error").hidden = true;
    dialog.showModal();
    return new Promise((resolve) => {
      const done = (value) => {
        $("#action-form").removeEventListener("submit", onSubmit);
        $("#action-cancel").removeEventListener("click", onCancel);
        dialog.close();
        resolve(value);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const reason = $("#action-reason").value.trim();
        if (reason.length < 3) {
          $("#action-error").textContent = "Please give a reason (at least 3 characters).";
          $("#action-error").hidden = false;
          return;
        }
        done(reason);
      };
      const onCancel = () => done(null);
      $("#action-form").addEventListener("submit", onSubmit);
      $("#action-cancel").addEventListener("click", onCancel);
    });
  }

  async function afterAction(result, verb) {
    const skipped = result.skipped.length
      ? ` Skipped: ${result.skipped.map((s) => `${s.ref} (${s.why})`).join(", ")}.` : "";
    notice(`${verb} ${result.refs.length} message(s) as ${result.actor}.${skipped}`);
    await refresh();
    if (state.detail) await openDetail(state.detail.message.ref);
  }

  async function resendOne(ref) {
    const reason = await askReason("Re-send message", `Message ${ref} is queued for delivery again.`);
    if (reason === null) return;
    const result = await api(`messages/${encodeURIComponent(ref)}/resend`, { method: "POST", body: { reason } });
    await afterAction(result, "Re-sent");
  }

  async function resolveOne(ref) {
    const reason = await askReason("Mark as resolved", `Message ${ref} leaves the failure list; its history stays.`);
    if (reason === null) return;
    const result = await api(`messages/${encodeURIComponent(ref)}/resolve`, { method: "POST", body: { reason } });
    await afterAction(result, "Resolved");
  }

  async function resendMatching() {
    const filter = { ...state.filter };
    const statuses = filter.status ? [filter.status] : ["DEAD"];
    delete filter.status;
    const scope = filter.flow ? ` of flow ${filter.flow}` : "";
    const reason = await askReason("Re-send all matching",
      `Every ${statuses.join("/")} message${scope} matching the search (${state.total} found) `
      + "is queued for delivery again.");
    if (reason === null) return;
    const result = await api("resend", { method: "POST", body: { ...filter, status: statuses, reason } });
    await afterAction(result, "Re-sent");
  }

  async function showContent() {
    const ref = state.detail.message.ref;
    const reason = await askReason("Show content", "Looking at the content is recorded in the message's history.");
    if (reason === null) return;
    const response = await fetch(new URL(`messages/${encodeURIComponent(ref)}/content`, API), {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ reason }),
    });
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail; } catch (_) { /* keep status text */ }
      throw new ApiError(response.status, String(detail));
    }
    const text = await response.text();
    await openDetail(ref);
    const pre = $("#detail-content-text");
    pre.textContent = text;
    pre.hidden = false;
  }

  // ---------------------------------------------------------------- wiring

  async function refresh() {
    await Promise.all([loadChart(), loadFailures(), state.filter ? search(state.offset) : null]);
  }

  function guard(fn) {
    return (...args) => Promise.resolve().then(() => fn(...args)).catch(fail);
  }

  async function start() {
    const query = new URLSearchParams(window.location.search);
    $("#chart-form").addEventListener("change", guard(loadChart));
    $("#show-resolved").addEventListener("change", guard(loadFailures));
    $("#search-form").addEventListener("submit", guard(async (ev) => {
      ev.preventDefault();
      state.filter = { ...readFilter(), ...(state.taskContext || {}) };
      await search(0);
    }));
    $("#prev-page").addEventListener("click", guard(() => search(Math.max(0, state.offset - PAGE_SIZE))));
    $("#next-page").addEventListener("click", guard(() => search(state.offset + PAGE_SIZE)));
    $("#resend-matching").addEventListener("click", guard(resendMatching));
    $("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; state.detail = null; });
    $("#detail-resend").addEventListener("click", guard(() => resendOne(state.detail.message.ref)));
    $("#detail-resolve").addEventListener("click", guard(() => resolveOne(state.detail.message.ref)));
    $("#detail-content").addEventListener("click", guard(showContent));

    await loadMe();
    // Opened from a task instance (Airflow's external-view tab fills these in).
    // Airflow leaves a placeholder it cannot fill as it is (e.g. {MAP_INDEX} of a task that
    // is not mapped): such a value counts as absent.
    const given = (key) => {
      const value = query.get(key);
      return value && !/^\{[A-Z_]+\}$/.test(value) ? value : null;
    };
    if (given("dag_id") && given("run_id") && given("task_id")) {
      const mapIndex = given("map_index");
      state.taskContext = { dag_id: given("dag_id"), run_id: given("run_id"),
        task_id: given("task_id"), map_index: /^-?\d+$/.test(mapIndex || "") ? mapIndex : "-1" };
      $("#task-context").hidden = false;
      $("#task-context-text").textContent = `Task ${state.taskContext.task_id} of run `
        + `${state.taskContext.run_id} (DAG ${state.taskContext.dag_id}`
        + `${state.taskContext.map_index !== "-1" ? `, map index ${state.taskContext.map_index}` : ""}).`;
      state.filter = { ...state.taskContext };
      // On a task instance's tab, what that task handled comes first.
      $("#task-context").after($("#search"));
    }
    // Links from alert mails and elsewhere: ?uuid=…, ?flow=…&status=DEAD.
    const prefill = {};
    for (const key of ["uuid", "sender", "recipient", "message_type", "flow", "status"]) {
      const value = query.get(key);
      if (!value) continue;
      const field = $("#search-form").elements.namedItem(key);
      if (field) field.value = value;
      prefill[key] = value;
    }
    if (Object.keys(prefill).length) state.filter = { ...prefill, ...(state.taskContext || {}) };
    await refresh();
    document.body.dataset.ready = "true";
    // Operators keep the page open on call: chart and failure list follow the ledger.
    window.setInterval(() => {
      if (document.visibilityState === "visible" && !$("#action-dialog").open) {
        Promise.all([loadChart(), loadFailures()]).catch(fail);
      }
    }, AUTO_REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => { guard(start)(); });
})();
