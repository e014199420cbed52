// The charger page: one view from /api/view, then live by server-sent events (/events).
"use strict";
(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const state = { view: null, samples: {}, me: { logged_in: false, csrf: null }, source: null, records: null };
  const cards = new Map();
  const M = JSON.parse(document.getElementById("messages").textContent || "{}");
  const t = (key, values = {}) => (M[key] || key).replace(/\{(\w+)\}/g, (_, k) => (k in values ? values[k] : "{" + k + "}"));

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  const kwh = (wh) => (wh / 1000).toFixed(1) + " kWh";
  const plural = (n) => n + " " + t(n === 1 ? "js.session" : "js.sessions");

  function toast(text) {
    const t = $("#toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  // --- the connectors ---------------------------------------------------------------
  function card(id) {
    if (cards.has(id)) return cards.get(id);
    const node = $("#connector-tpl").content.firstElementChild.cloneNode(true);
    node.dataset.connector = id;
    $(".cid", node).textContent = id;
    $(".stop", node).addEventListener("click", () => act({ action: "stop", connector: id }, t("js.stopping")));
    $(".clear", node).addEventListener("click", () => act({ action: "clear-faults", connector: id }, t("js.faults_cleared")));
    $(".avail", node).addEventListener("click", (e) =>
      act({ action: "availability", connector: id, operative: e.target.dataset.operative === "true" }, t("js.done")));
    $(".start", node).addEventListener("submit", (e) => {
      e.preventDefault();
      act({ action: "start", connector: id, id_tag: e.target.id_tag.value }, t("js.starting"));
    });
    $(".reserve", node).addEventListener("submit", (e) => {
      e.preventDefault();
      act({ action: "reserve", connector: id, id_tag: e.target.id_tag.value,
            minutes: parseInt(e.target.minutes.value, 10) }, t("js.reserved"));
    });
    const limit = $(".limit", node);
    const showLimit = () => { $(".limit-value", node).textContent = limit.current_a.value + " A"; };
    limit.current_a.addEventListener("input", showLimit);
    limit.addEventListener("submit", (e) => {
      e.preventDefault();
      act({ action: "limit", connector: id, current_a: parseInt(limit.current_a.value, 10) }, t("js.limit_set"));
    });
    $(".lift", node).addEventListener("click", () => act({ action: "limit", connector: id, current_a: null }, t("js.limit_lifted")));
    $(".plan-form", node).addEventListener("submit", (e) => {
      e.preventDefault();
      act({ action: "plan", connector: id, energy_kwh: parseFloat(e.target.energy_kwh.value), by: e.target.by.value },
          t("js.plan_set"));
    });
    $(".plan-cancel", node).addEventListener("click", () => act({ action: "plan-cancel", connector: id }, t("js.plan_cancelled")));
    showLimit();
    $("#connectors").appendChild(node);
    cards.set(id, node);
    return node;
  }

  function renderConnector(c) {
    const node = card(c.id);
    node.className = "connector " + c.tone;
    $(".headline", node).textContent = c.headline;
    $(".badge", node).textContent = [c.status_text, c.state ? t("js.state", { state: c.state }) : ""].filter(Boolean).join(" · ");
    const bits = [];
    if (c.session) {
      bits.push(c.session.card ? t("js.card") + " " + c.session.card : t("js.session_word"));
      if (c.session.started) bits.push(t("js.since", { time: c.session.started }));
      if (c.offered_a) bits.push(t("js.offered", { amps: c.offered_a }));
      if (c.current_a && c.current_a.length) bits.push(t("js.drawing", { amps: c.current_a.map((a) => a.toFixed(1)).join(" / ") }));
    } else if (c.reason && c.tone !== "idle" && c.headline.toLowerCase() !== c.reason.toLowerCase()) {
      bits.push(c.reason);
    }
    $(".detail", node).textContent = bits.join(" · ");
    const body = $(".limits tbody", node);
    body.replaceChildren(...c.limits.map((l) => {
      const tr = el("tr");
      if (l.binding) tr.className = "binding";
      tr.append(el("td", l.label), el("td", l.current_a + " A" + (l.until ? " – " + l.until : ""), "n"));
      return tr;
    }));
    const avail = $(".avail", node);
    const off = c.status === "Unavailable";
    avail.textContent = off ? t("js.make_available") : c.unavailable_pending ? t("js.unavailable_pending") : t("js.make_unavailable");
    avail.dataset.operative = String(off);
    const limit = $(".limit", node);
    limit.current_a.max = String(c.max_a || 32);
    if (document.activeElement !== limit.current_a && c.web_limit_a) limit.current_a.value = String(c.web_limit_a);
    $(".limit-value", node).textContent = c.web_limit_a ? limit.current_a.value + " A" : t("page.no_limit");
    $(".lift", node).hidden = !c.web_limit_a;
    $(".stop", node).hidden = !c.session;
    $(".start", node).hidden = !!c.session;
    $(".clear", node).hidden = c.tone !== "fault";
    $(".actions", node).hidden = !state.me.logged_in;
    renderPlan(node, c);
    drawPlot(c.id);
  }

  // --- the charging plan: what, by when, what it does now, its hours over the prices ---------
  function renderPlan(node, c) {
    const p = c.plan;
    $(".plan", node).hidden = !p;
    $(".plan-cancel", node).hidden = !p;
    if (!p) return;
    $(".plan-text", node).textContent = p.text + (p.words ? " · " + p.words : "");
    $(".plan-line", node).textContent = p.line;
    const img = $(".plan-chart", node);
    img.hidden = !p.chart;
    const src = "/plan/" + c.id + ".svg?v=" + p.version;
    if (p.chart && img.getAttribute("src") !== src) img.setAttribute("src", src);
  }

  // --- the plot of the running session: power and current per phase -------------------
  function drawPlot(id) {
    const node = cards.get(id);
    if (!node) return;
    const canvas = $(".plot", node);
    const points = state.samples[id] || [];
    const box = $(".plot-box", node);
    const view = state.view && state.view.connectors.find((c) => c.id === id);
    box.hidden = points.length === 0 || !(view && view.plot);
    if (!points.length) return;
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 180;
    canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const left = 38, right = 34, top = 8, bottom = 20;
    const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 60);
    const pMax = Math.max(1000, ...points.map((p) => p.p)) / 1000;
    const iMax = Math.max(6, ...points.flatMap((p) => p.i));
    const x = (t) => left + (w - left - right) * (t - t0) / (t1 - t0);
    const yP = (kw) => top + (h - top - bottom) * (1 - kw / pMax);
    const yI = (a) => top + (h - top - bottom) * (1 - a / iMax);
    g.clearRect(0, 0, w, h);
    g.font = "12px system-ui, sans-serif";
    g.strokeStyle = color("--line"); g.fillStyle = color("--muted"); g.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = top + (h - top - bottom) * (1 - f);
      g.beginPath(); g.moveTo(left, y); g.lineTo(w - right, y); g.stroke();
      g.textAlign = "right"; g.fillText((pMax * f).toFixed(1), left - 4, y + 4);
      g.textAlign = "left"; g.fillText((iMax * f).toFixed(0) + " A", w - right + 4, y + 4);
    }
    const minutes = Math.round((t1 - t0) / 60);
    g.textAlign = "right"; g.fillText(t("js.min", { n: minutes }), w - right, h - 4);
    g.textAlign = "left"; g.fillText(t("js.start"), left, h - 4);
    const line = (stroke, yOf, width) => {
      g.strokeStyle = stroke; g.lineWidth = width; g.beginPath();
      points.forEach((p, k) => { const y = yOf(p); if (y === null) return; k ? g.lineTo(x(p.t), y) : g.moveTo(x(p.t), y); });
      g.stroke();
    };
    // power as a filled area underneath, the phase currents as lines over it
    g.beginPath();
    g.moveTo(x(points[0].t), yP(0));
    points.forEach((p) => g.lineTo(x(p.t), yP(p.p / 1000)));
    g.lineTo(x(points[points.length - 1].t), yP(0));
    g.closePath();
    g.globalAlpha = 0.22; g.fillStyle = color("--accent"); g.fill(); g.globalAlpha = 1;
    line(color("--accent"), (p) => yP(p.p / 1000), 1.5);
    ["--l1", "--l2", "--l3"].forEach((name, phase) => {
      if (points.some((p) => p.i.length > phase)) line(color(name), (p) => (p.i.length > phase ? yI(p.i[phase]) : null), 1.6);
    });
  }

  // --- totals, records, charts ----------------------------------------------------------
  function renderTotals(totals) {
    $("#today-kwh").textContent = kwh(totals.today_wh);
    $("#today-n").textContent = plural(totals.today_sessions);
    $("#month-kwh").textContent = kwh(totals.month_wh);
    $("#month-n").textContent = plural(totals.month_sessions);
  }

  function render(view) {
    state.view = view;
    document.title = view.title;
    $("#title").textContent = view.title;
    const link = $("#link");
    link.textContent = view.online ? t("js.live") : t("js.not_answering");
    link.className = "link " + (view.online ? "on" : "off");
    view.connectors.forEach(renderConnector);
    renderTotals(view.totals);
    // the service read the records anew (a session was stored): the table and charts follow
    if (state.records !== null && state.records !== view.records_version) loadRecords();
    state.records = view.records_version;
    renderModes(view.modes || ["fast", "solar", "min+solar"], view.mode);
    renderSolar(view.solar);
  }

  function renderModes(modes, mode) {
    const sel = $("#mode");
    if (sel.dataset.modes !== modes.join(",")) {
      sel.replaceChildren(...modes.map((m) => new Option(t("page.mode." + m), m)));
      sel.dataset.modes = modes.join(",");
    }
    if (mode) sel.value = mode;
  }

  function renderSolar(solar) {
    $("#solar").hidden = !solar;
    if (!solar) return;
    const kw = (w) => (w / 1000).toFixed(1) + " kW";
    $("#solar-surplus").textContent = kw(solar.surplus_w);
    $("#solar-ev").textContent = kw(solar.ev_w);
    $("#solar-grid").textContent = kw(solar.grid_w);
  }

  function table(node, head, rows) {
    const cls = (h) => [h[1] ? "n" : "", h[2] || ""].join(" ").trim();
    const thead = el("tr");
    head.forEach((h) => thead.append(el("th", h[0], cls(h))));
    node.replaceChildren(thead, ...rows.map((cells) => {
      const tr = el("tr");
      cells.forEach((v, k) => tr.append(el("td", v, cls(head[k]))));
      return tr;
    }));
  }

  async function loadSessions() {
    const q = new URLSearchParams(new FormData($("#filter")));
    for (const [k, v] of [...q]) if (!v) q.delete(k);
    $("#csv").href = "/sessions.csv" + (q.toString() ? "?" + q : "");
    const r = await fetch("/api/sessions?" + q);
    if (!r.ok) {  // a card filter needs a login
      table($("#sessions"), [[(await r.text()) || r.statusText]], []);
      return;
    }
    const data = await r.json();
    // the columns a phone drops first are marked optional ("opt"): start, card, kWh and money stay
    table($("#sessions"), [[t("js.col.start")], [t("js.col.card")], [t("js.col.kwh"), true], [t("js.col.paid"), true],
      [t("js.col.cost"), true, "opt"], [t("js.col.margin"), true, "opt"], [t("js.col.stop"), false, "opt"],
      [t("js.col.connector"), true, "opt"], [t("js.col.peak_kw"), true, "opt"], [t("js.col.reason"), false, "opt"]],
      data.sessions.map((s) => [s.started_local, s.card_name || s.id_tag, (s.energy_wh / 1000).toFixed(2),
        s.paid, s.cost, s.margin, s.stopped_local || t("js.running"), s.connector_id,
        (s.peak_power_w / 1000).toFixed(1), (s.stop_reason || "").replaceAll("_", " ")]));
  }

  async function loadReport() {
    const month = $("#month").value;
    $("#report-month").textContent = month;
    const stamp = Date.now();
    $("#usage-day").src = "/usage/day.svg?month=" + month + "&t=" + stamp;
    $("#usage-hour").src = "/usage/hour.svg?month=" + month + "&t=" + stamp;
    const data = await (await fetch("/api/report?month=" + month)).json();
    const line = (name, r) => [name, r.sessions, Number(r.energy_kwh).toFixed(1), r.hours, r.revenue, r.cost, r.margin];
    table($("#report"), [[t("js.col.card")], [t("js.col.sessions"), true], [t("js.col.kwh"), true],
      [t("js.col.hours"), true, "opt"], [t("js.col.paid"), true], [t("js.col.cost"), true, "opt"], [t("js.col.margin"), true]],
      [...data.by_card.map((r) => line(r.name || r.key, r)), ...data.total.map((r) => line(t("js.total"), r))]);
  }

  function loadRecords() { loadSessions(); loadReport(); }

  function months() {
    const sel = $("#month");
    const now = new Date();
    for (let k = 0; k < 12; k++) {
      const d = new Date(now.getFullYear(), now.getMonth() - k, 1);
      const v = d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0");
      sel.append(new Option(v, v));
    }
    sel.addEventListener("change", loadReport);
  }

  // --- live updates -----------------------------------------------------------------
  function connect() {
    if (state.source) state.source.close();
    const source = new EventSource("/events");
    state.source = source;
    source.addEventListener("full", (e) => {
      const data = JSON.parse(e.data);
      state.samples = data.samples;
      render(data.view);
    });
    source.addEventListener("view", (e) => render(JSON.parse(e.data)));
    source.addEventListener("reset", (e) => {
      const id = JSON.parse(e.data).connector;
      state.samples[id] = [];
      drawPlot(id);
    });
    source.addEventListener("sample", (e) => {
      const s = JSON.parse(e.data);
      (state.samples[s.connector] ||= []).push({ t: s.t, p: s.p, i: s.i });
      drawPlot(s.connector);
    });
    source.onerror = () => {
      const link = $("#link");
      link.textContent = t("js.reconnecting");
      link.className = "link off";
    };
  }

  // --- login and actions ----------------------------------------------------------------
  function applyMe(me) {
    state.me = me;
    $("#login-btn").textContent = me.logged_in ? t("js.log_out") : LOGIN_TEXT;
    $("#login-btn").hidden = !me.logged_in && !me.login_possible;
    $("#mode-box").hidden = !me.logged_in;
    document.querySelectorAll(".actions").forEach((a) => { a.hidden = !me.logged_in; });
    $("#rules").hidden = !me.logged_in;
    if (me.logged_in) loadRules();
  }

  // --- the cards, groups and windows in force; learning a card ---------------------------
  async function loadRules(expect) {
    let rules = null;
    for (let k = 0; k < 20; k++) {  // a saved card: the daemon writes the file a moment after it answers
      const r = await fetch("/api/rules");
      if (!r.ok) return;
      rules = await r.json();
      if (!expect || rules.cards.some((c) => c.uid === expect)) break;
      await new Promise((done) => setTimeout(done, 300));
    }
    table($("#rules-cards"), [[t("page.name")], [t("page.uid")], [t("page.group")]],
      rules.cards.map((c) => [c.name, c.uid, c.group]));
    table($("#rules-groups"), [[t("page.name")], [t("js.col.amps"), true]],
      rules.groups.map((g) => [g.name, g.max_current_a === null ? "–" : g.max_current_a]));
    table($("#rules-windows"), [[t("page.name")], [t("js.col.days")], [t("js.col.from")], [t("js.col.to")],
      [t("js.col.action")], [t("js.col.amps"), true], [t("js.col.group"), false, "opt"]],
      rules.windows.map((w) => [w.name, w.days.join(" "), w.start, w.end === w.start ? t("js.all_day") : w.end,
        w.mode ? w.action + " " + t("page.mode." + w.mode) : w.action, w.max_current_a === null ? "" : w.max_current_a, w.groups.join(" ")]));
    $("#learn-group").replaceChildren(new Option("–", ""), ...rules.groups.map((g) => new Option(g.name, g.name)));
  }

  async function learn() {
    const status = $("#learn-status");
    $("#learn-form").hidden = true;
    const started = await post("/api/command", { action: "learn" });
    if (!started.ok) { status.textContent = started.error || ""; return; }
    status.textContent = t("page.learn_tap");
    for (let k = 0; k < 300; k++) {  // the daemon waits 60 s for a tap
      await new Promise((done) => setTimeout(done, 500));
      const reply = await post("/api/command", { action: "learned" });
      if (reply.card) {
        if (reply.card.known) { status.textContent = t("js.card_known", { name: reply.card.name || reply.card.uid }); return; }
        status.textContent = "";
        $("#learn-uid").textContent = reply.card.uid;
        $("#learn-form").hidden = false;
        $("#learn").card_name.focus();
        return;
      }
      if (!reply.ok || !reply.waiting) { status.textContent = t("js.no_card"); return; }
    }
  }

  async function post(url, body) {
    const headers = { "Content-Type": "application/json" };
    if (state.me.csrf) headers["X-CSRF-Token"] = state.me.csrf;
    const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
    let data = {};
    try { data = await r.json(); } catch (err) { data = { ok: false, error: r.statusText }; }
    return data;
  }

  async function act(body, done) {
    const reply = await post("/api/command", body);
    if (reply.ok && reply.result === "Scheduled") toast(t("js.after_session", { done }));
    else if (reply.ok && (!reply.result || reply.result === "Accepted")) toast(done);
    else toast(reply.error || t("js.refused", { why: reply.reason || reply.result }));
  }

  function loginSetup() {
    const dialog = $("#login-dialog");
    $("#login-btn").addEventListener("click", async () => {
      if (state.me.logged_in) {
        await post("/logout", {});
        applyMe({ logged_in: false, csrf: null, login_possible: true });
        connect();
        loadRecords();
        return;
      }
      $("#login-error").textContent = "";
      dialog.showModal();
    });
    $("#login-cancel").addEventListener("click", () => dialog.close());
    $("#login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const button = $("button[type=submit]", e.target);
      button.disabled = true;
      const reply = await post("/login", { password: e.target.password.value });
      button.disabled = false;
      if (!reply.ok) { $("#login-error").textContent = reply.error; return; }
      e.target.reset();
      dialog.close();
      applyMe({ logged_in: true, csrf: reply.csrf, login_possible: true });
      connect();  // a logged-in stream shows card UIDs
      loadRecords();
      toast(t("js.logged_in"));
    });
    $("#mode").addEventListener("change", (e) => act({ action: "mode", mode: e.target.value }, t("js.mode_set")));
    $("#learn-btn").addEventListener("click", learn);
    $("#learn").addEventListener("submit", async (e) => {
      e.preventDefault();
      const uid = $("#learn-uid").textContent;
      const reply = await post("/api/command", { action: "add-card", uid,
        name: e.target.card_name.value, group: e.target.card_group.value });
      if (!reply.ok) { toast(reply.error || t("js.refused", { why: reply.result })); return; }
      $("#learn-form").hidden = true;
      e.target.reset();
      toast(t("js.card_saved"));
      loadRules(uid);
    });
  }

  const LOGIN_TEXT = document.getElementById("login-btn").textContent;

  async function start() {
    months();
    loginSetup();
    $("#filter").addEventListener("submit", (e) => { e.preventDefault(); loadSessions(); });
    const data = await (await fetch("/api/view")).json();
    applyMe(data.me);
    state.samples = data.samples;
    render(data.view);
    loadRecords();
    connect();
    window.addEventListener("resize", () => cards.forEach((_, id) => drawPlot(id)));
  }
  start();
})();
