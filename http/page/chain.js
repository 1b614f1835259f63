// The live option-chain page. Plain JS, no dependencies: it talks to this server's API as any
// client would.
//
// Auth: the API key is asked for once (or taken from a `#key=...` fragment, which is then removed
// from the address bar) and kept in sessionStorage, i.e. in this tab only. It is sent to one place:
// `POST /auth/token`, for a short-lived JWT. The JWT opens `/ws/ticks?token=...` (browsers cannot
// set headers on a WebSocket) and the chain reads (`GET /chain/expiries`, `GET /chain`, as
// `Authorization: Bearer`). It is renewed a minute before it expires, and every (re)connect and
// read uses a current one.
//
// Data: the first paint comes from `GET /chain`; then `subscribe_chain` on the socket sends the
// whole chain (`full: true`) and the streamer's updates (`full: false`, only the strikes that
// changed), merged here by strike.
"use strict";

(() => {
  const KEY_STORE = "ticker.apiKey";
  const CHAIN_STORE = "ticker.chain";
  const RENEW_BEFORE_MS = 60_000;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  const SIDE_FIELDS = ["oi", "oi_change", "volume", "iv", "delta", "bid", "ask", "ltp"];
  const CALL_ORDER = SIDE_FIELDS;
  const PUT_ORDER = ["ltp", "bid", "ask", "delta", "iv", "volume", "oi_change", "oi"];

  const $ = (id) => document.getElementById(id);
  const state = {
    key: null, token: null, tokenExpires: 0, renewTimer: null,
    underlying: "NIFTY", expiry: null,
    summary: {}, rows: new Map(), cells: new Map(), strikes: [],
    ws: null, attempt: 0, retryTimer: null, updates: 0, dataAt: null, centred: false,
  };

  // --- formatting ------------------------------------------------------------------------------
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fixed = (v, d = 2) => (isNum(v) ? v.toLocaleString("en-IN", { minimumFractionDigits: d, maximumFractionDigits: d }) : "–");
  function compact(v, signed = false) {
    if (!isNum(v)) return "–";
    const sign = v < 0 ? "-" : signed && v > 0 ? "+" : "";
    const a = Math.abs(v);
    const body = a >= 1e7 ? (a / 1e7).toFixed(2) + "Cr" : a >= 1e5 ? (a / 1e5).toFixed(2) + "L"
      : a >= 1e3 ? (a / 1e3).toFixed(1) + "K" : String(Math.round(a));
    return sign + body;
  }
  const FORMAT = {
    oi: (v) => compact(v), oi_change: (v) => compact(v, true), volume: (v) => compact(v),
    iv: (v) => (isNum(v) ? (v * 100).toFixed(1) : "–"), delta: (v) => (isNum(v) ? v.toFixed(2) : "–"),
    bid: (v) => fixed(v), ask: (v) => fixed(v), ltp: (v) => fixed(v),
  };
  const strikeText = (k) => (Number.isInteger(k) ? k.toLocaleString("en-IN") : fixed(k));

  // --- connection state ------------------------------------------------------------------------
  function showState(name, text) {
    const el = $("conn");
    el.dataset.state = name;
    el.querySelector("span").textContent = text || name;
  }
  function notice(text) {
    const el = $("notice");
    el.hidden = !text;
    el.textContent = text || "";
  }

  // --- the API key and the token -----------------------------------------------------------------
  function keyFromFragment() {
    const m = /(?:^|[#&])key=([^&]+)/.exec(location.hash);
    if (!m) return;
    sessionStorage.setItem(KEY_STORE, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }

  function askForKey(message) {
    showState("key", "API key needed");
    $("keyerror").textContent = message || "";
    const dialog = $("keydialog");
    if (!dialog.open) dialog.showModal();
    $("keyinput").focus();
  }

  class AuthFailed extends Error {}

  async function call(path, headers, method = "GET") {
    const resp = await fetch(path, { method, headers, cache: "no-store" });
    const body = await resp.json().catch(() => ({}));
    const why = (body.error && body.error.message) || `${path}: HTTP ${resp.status}`;
    if (resp.status === 401) throw new AuthFailed(why);
    if (!resp.ok) throw new Error(why);
    return body;
  }

  // A chain read with the JWT; a refused token (expired while the tab slept) is renewed once.
  async function api(path) {
    try {
      return await call(path, { Authorization: `Bearer ${await currentToken()}` });
    } catch (err) {
      if (!(err instanceof AuthFailed)) throw err;
      state.token = null;
      return call(path, { Authorization: `Bearer ${await currentToken()}` });
    }
  }

  async function renewToken() {
    const doc = await call("/auth/token", { "X-API-Key": state.key }, "POST");
    state.token = doc.token;
    state.tokenExpires = Date.parse(doc.expires_at);
    clearTimeout(state.renewTimer);
    const wait = Math.max(5_000, state.tokenExpires - Date.now() - RENEW_BEFORE_MS);
    state.renewTimer = setTimeout(() => renewToken().catch(failed), wait);
  }

  async function currentToken() {
    if (!state.token || state.tokenExpires - Date.now() < RENEW_BEFORE_MS) await renewToken();
    return state.token;
  }

  function failed(err) {
    if (err instanceof AuthFailed) {
      sessionStorage.removeItem(KEY_STORE);
      state.key = null;
      closeSocket();
      askForKey(err.message);
      return;
    }
    notice(String(err.message || err));
  }

  // --- choosing a chain --------------------------------------------------------------------------
  async function loadExpiries() {
    const doc = await api(`/chain/expiries?underlying=${encodeURIComponent(state.underlying)}`);
    const select = $("expiry");
    select.replaceChildren(...doc.expiries.map((e) => new Option(e, e)));
    if (!doc.expiries.includes(state.expiry)) state.expiry = doc.expiries[0] || null;
    select.value = state.expiry;
  }

  async function loadSnapshot() {
    const q = `underlying=${encodeURIComponent(state.underlying)}&expiry=${encodeURIComponent(state.expiry)}`;
    applyChain(await api(`/chain?${q}`), true);
  }

  async function openChain() {
    notice("");
    sessionStorage.setItem(CHAIN_STORE, JSON.stringify({ underlying: state.underlying, expiry: state.expiry }));
    state.rows.clear();
    state.centred = false;
    await loadSnapshot();
    subscribe();
  }

  async function start() {
    try {
      await loadExpiries();
      await openChain();
      connect();
    } catch (err) {
      failed(err);
    }
  }

  // --- the socket ----------------------------------------------------------------------------------
  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function subscribe(previous) {
    if (previous) send({ action: "unsubscribe_chain", underlying: previous.underlying, expiry: previous.expiry });
    send({ action: "subscribe_chain", underlying: state.underlying, expiry: state.expiry });
  }

  function closeSocket() {
    clearTimeout(state.retryTimer);
    if (state.ws) {
      state.ws.onclose = null;
      state.ws.close();
      state.ws = null;
    }
  }

  async function connect() {
    closeSocket();
    showState(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
    let token;
    try {
      token = await currentToken();
    } catch (err) {
      if (err instanceof AuthFailed) return failed(err);
      return retry(String(err.message || err));
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/ticks?token=${encodeURIComponent(token)}`);
    state.ws = ws;
    ws.onopen = () => {
      state.attempt = 0;
      const conn = $("conn");
      conn.dataset.connects = String(Number(conn.dataset.connects || 0) + 1);
      showState("live", "live");
      subscribe();
    };
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = () => {
      state.ws = null;
      state.token = null; // a refused upgrade looks like any close: the next try buys a fresh token
      retry("connection closed");
    };
  }

  function retry(why) {
    const base = BACKOFF_MS[Math.min(state.attempt, BACKOFF_MS.length - 1)];
    const wait = Math.round(base * (0.75 + Math.random() * 0.5));
    state.attempt += 1;
    showState("reconnecting", `${why}; retry in ${(wait / 1000).toFixed(1)}s`);
    clearTimeout(state.retryTimer);
    state.retryTimer = setTimeout(connect, wait);
  }

  function onMessage(msg) {
    if (msg.type === "chain") {
      const doc = msg.data;
      if (doc.underlying !== state.underlying || doc.expiry !== state.expiry) return; // a chain we left
      applyChain(doc, doc.full === true);
      if (doc.full !== true) countUpdate();
    } else if (msg.type === "error") {
      notice(msg.message);
    }
  }

  // --- the chain's data ----------------------------------------------------------------------------
  function applyChain(doc, full) {
    if (full) state.rows.clear();
    let freshest = Infinity;
    for (const row of doc.rows) {
      state.rows.set(row.strike, row);
      for (const leg of [row.ce, row.pe]) if (leg && isNum(leg.age_ms)) freshest = Math.min(freshest, leg.age_ms);
    }
    const { rows, ...summary } = doc;
    state.summary = summary;
    if (Number.isFinite(freshest)) state.dataAt = Date.now() - freshest;
    render(full);
  }

  function countUpdate() {
    state.updates += 1;
    const el = $("updates");
    el.textContent = String(state.updates);
    el.dataset.count = String(state.updates);
  }

  // --- drawing -------------------------------------------------------------------------------------
  function render(full) {
    const strikes = [...state.rows.keys()].sort((a, b) => a - b);
    if (full || strikes.length !== state.strikes.length || strikes.some((k, i) => k !== state.strikes[i])) build(strikes);
    for (const k of strikes) paintRow(k);
    // Until some strike has a price, the empty ones stay in view (the ladder would be blank otherwise).
    $("ladder").classList.toggle("priced", [...state.rows.values()].some((r) => isNum(r.ce && r.ce.ltp) || isNum(r.pe && r.pe.ltp)));
    marks();
    strip();
    drawSmile();
    drawOi();
    if (!state.centred && isNum(state.summary.atm_strike)) centre();
  }

  function build(strikes) {
    const body = $("ladder").tBodies[0];
    state.cells.clear();
    state.strikes = strikes;
    const trs = strikes.map((k) => {
      const tr = document.createElement("tr");
      tr.dataset.strike = String(k);
      const cells = { tr, ce: {}, pe: {} };
      for (const f of CALL_ORDER) tr.append(cells.ce[f] = cell(f, "ce"));
      const kc = document.createElement("td");
      kc.className = "k";
      kc.textContent = strikeText(k);
      tr.append(cells.k = kc);
      for (const f of PUT_ORDER) tr.append(cells.pe[f] = cell(f, "pe"));
      state.cells.set(k, cells);
      return tr;
    });
    body.replaceChildren(...trs);
  }

  function cell(field, side) {
    const td = document.createElement("td");
    td.className = field === "ltp" ? `ltp ${side}` : side;
    td.dataset.field = field;
    td.textContent = "–";
    return td;
  }

  function paintRow(k) {
    const row = state.rows.get(k), cells = state.cells.get(k);
    for (const side of ["ce", "pe"]) {
      const leg = row[side] || {};
      for (const f of SIDE_FIELDS) {
        const td = cells[side][f], v = leg[f], text = FORMAT[f](v);
        if (td.textContent === text) continue;
        const before = Number(td.dataset.value);
        td.textContent = text;
        td.dataset.value = isNum(v) ? String(v) : "";
        if (f === "oi_change") td.classList.toggle("pos", v > 0), td.classList.toggle("neg", v < 0);
        if (isNum(v) && Number.isFinite(before) && td.dataset.value !== "" && before !== v) flash(td, v > before);
      }
    }
    // A strike nobody streams is hidden unless asked for (see the `strikes without ticks` box).
    cells.tr.classList.toggle("empty", !isNum(row.ce && row.ce.ltp) && !isNum(row.pe && row.pe.ltp));
  }

  function flash(td, up) {
    td.classList.remove("up", "down");
    void td.offsetWidth; // restart the animation
    td.classList.add(up ? "up" : "down");
  }

  function marks() {
    const s = state.summary, ref = isNum(s.spot) ? s.spot : s.forward;
    for (const [k, cells] of state.cells) {
      cells.tr.classList.toggle("atm", k === s.atm_strike);
      for (const td of Object.values(cells.ce)) td.classList.toggle("itm-ce", isNum(ref) && k < ref);
      for (const td of Object.values(cells.pe)) td.classList.toggle("itm-pe", isNum(ref) && k > ref);
    }
  }

  function centre() {
    const cells = state.cells.get(state.summary.atm_strike);
    if (!cells) return;
    const wrap = $("ladder-wrap");
    wrap.scrollTop = cells.tr.offsetTop - wrap.clientHeight / 2 + cells.tr.offsetHeight / 2;
    state.centred = true;
  }

  function strip() {
    const s = state.summary;
    const pct = (v) => (isNum(v) ? (v * 100).toFixed(2) + "%" : "–");
    $("f-spot").textContent = fixed(s.spot);
    $("f-forward").textContent = fixed(s.forward);
    $("f-atm").textContent = isNum(s.atm_strike) ? strikeText(s.atm_strike) : "–";
    $("f-atmiv").textContent = pct(s.atm_iv);
    $("f-pcr").textContent = isNum(s.pcr_oi) ? s.pcr_oi.toFixed(2) : "–";
    $("f-pcrv").textContent = isNum(s.pcr_volume) ? s.pcr_volume.toFixed(2) : "–";
    $("f-maxpain").textContent = isNum(s.max_pain) ? strikeText(s.max_pain) : "–";
    $("f-straddle").textContent = fixed(s.straddle);
    $("f-rr").textContent = pct(s.rr_25d);
    $("f-ivp").textContent = isNum(s.iv_percentile) ? s.iv_percentile.toFixed(0) : "–";
    $("f-dte").textContent = isNum(s.t) ? (s.t * 365).toFixed(1) : "–";
  }

  // --- charts (inline SVG) -------------------------------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";
  function node(name, attrs, text) {
    const el = document.createElementNS(SVG, name);
    for (const [a, v] of Object.entries(attrs)) el.setAttribute(a, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // A frame of axes for strikes (x) against values (y); returns the scale functions.
  function frame(svg, w, h, xs, ys, yLabel, fromZero = false) {
    const pad = { l: 46, r: 22, t: 10, b: 24 };
    const [x0, x1] = [Math.min(...xs), Math.max(...xs)], [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const ySpan = y1 - y0 || Math.abs(y1) || 1;
    const lo = fromZero ? 0 : y0 - ySpan * 0.08, hi = y1 + ySpan * 0.08;
    const X = (v) => pad.l + ((v - x0) / (x1 - x0 || 1)) * (w - pad.l - pad.r);
    const Y = (v) => h - pad.b - ((v - lo) / (hi - lo)) * (h - pad.t - pad.b);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4, y = Y(v);
      parts.push(node("line", { x1: pad.l, x2: w - pad.r, y1: y, y2: y, class: "grid" }));
      parts.push(node("text", { x: pad.l - 4, y: y + 3, "text-anchor": "end" }, yLabel(v)));
    }
    for (let i = 0; i <= 4; i++) {
      const v = x0 + ((x1 - x0) * i) / 4;
      parts.push(node("text", { x: X(v), y: h - 8, "text-anchor": "middle" }, Math.round(v).toLocaleString("en-IN")));
    }
    svg.replaceChildren(...parts);
    return { X, Y, top: pad.t, bottom: h - pad.b, x0, x1 };
  }

  function forwardLine(svg, f) {
    const ref = isNum(state.summary.forward) ? state.summary.forward : state.summary.spot;
    if (isNum(ref) && ref >= f.x0 && ref <= f.x1) svg.append(node("line", { x1: f.X(ref), x2: f.X(ref), y1: f.top, y2: f.bottom, class: "fwd" }));
  }

  // The strikes worth drawing: those within reach of the money (deep wings would squash the rest).
  function nearStrikes() {
    const s = state.summary, ref = isNum(s.forward) ? s.forward : s.spot;
    const all = [...state.rows.keys()].sort((a, b) => a - b);
    return isNum(ref) ? all.filter((k) => Math.abs(k / ref - 1) <= 0.1) : all;
  }

  function drawSmile() {
    const svg = $("smile");
    const pts = { ce: [], pe: [] };
    for (const k of nearStrikes()) {
      const row = state.rows.get(k);
      for (const side of ["ce", "pe"]) if (row[side] && isNum(row[side].iv) && row[side].iv > 0) pts[side].push([k, row[side].iv * 100]);
    }
    const all = [...pts.ce, ...pts.pe];
    if (all.length < 2) return svg.replaceChildren(node("text", { x: 200, y: 140, "text-anchor": "middle" }, "no IVs yet"));
    const f = frame(svg, 400, 280, all.map((p) => p[0]), all.map((p) => p[1]), (v) => v.toFixed(1) + "%");
    forwardLine(svg, f);
    for (const side of ["ce", "pe"]) {
      svg.append(node("polyline", { class: side, points: pts[side].map(([k, v]) => `${f.X(k).toFixed(1)},${f.Y(v).toFixed(1)}`).join(" ") }));
      for (const [k, v] of pts[side]) svg.append(node("circle", { class: side, cx: f.X(k).toFixed(1), cy: f.Y(v).toFixed(1), r: 2 }));
    }
  }

  function drawOi() {
    const svg = $("oi");
    const ks = nearStrikes().filter((k) => { const r = state.rows.get(k); return (r.ce && isNum(r.ce.oi)) || (r.pe && isNum(r.pe.oi)); });
    if (ks.length < 2) return svg.replaceChildren(node("text", { x: 200, y: 100, "text-anchor": "middle" }, "no open interest yet"));
    const ois = ks.flatMap((k) => [state.rows.get(k).ce, state.rows.get(k).pe].map((l) => (l && isNum(l.oi) ? l.oi : 0)));
    const f = frame(svg, 400, 200, ks, ois, (v) => compact(v), true);
    const step = (f.X(ks[ks.length - 1]) - f.X(ks[0])) / (ks.length - 1), bw = Math.max(1, step * 0.4);
    for (const k of ks) {
      const row = state.rows.get(k);
      [["ce", -bw], ["pe", 0]].forEach(([side, dx]) => {
        const oi = row[side] && isNum(row[side].oi) ? row[side].oi : 0;
        svg.append(node("rect", { class: side, x: (f.X(k) + dx).toFixed(1), y: f.Y(oi).toFixed(1), width: bw.toFixed(1), height: Math.max(0, f.Y(0) - f.Y(oi)).toFixed(1) }));
      });
    }
    forwardLine(svg, f);
  }

  // --- the age of the data -------------------------------------------------------------------------
  function tickAge() {
    const el = $("age");
    if (state.dataAt === null) return;
    const s = (Date.now() - state.dataAt) / 1000;
    el.textContent = s < 60 ? `${s.toFixed(1)}s` : `${Math.floor(s / 60)}m ${Math.floor(s % 60)}s`;
    el.classList.toggle("neg", s > 10);
  }

  // --- wiring --------------------------------------------------------------------------------------
  function choose(underlying, expiry) {
    const previous = { underlying: state.underlying, expiry: state.expiry };
    state.underlying = underlying;
    state.expiry = expiry;
    const run = async () => {
      if (underlying !== previous.underlying) await loadExpiries();
      send({ action: "unsubscribe_chain", underlying: previous.underlying, expiry: previous.expiry });
      await openChain();
    };
    run().catch(failed);
  }

  function init() {
    keyFromFragment();
    state.key = sessionStorage.getItem(KEY_STORE);
    const saved = JSON.parse(sessionStorage.getItem(CHAIN_STORE) || "null");
    const asked = new URLSearchParams(location.search);
    state.underlying = (asked.get("underlying") || (saved && saved.underlying) || "NIFTY").toUpperCase();
    state.expiry = asked.get("expiry") || (saved && saved.expiry) || null;
    $("underlying").value = state.underlying;
    $("underlying").addEventListener("change", (e) => choose(e.target.value.trim().toUpperCase(), null));
    $("expiry").addEventListener("change", (e) => choose(state.underlying, e.target.value));
    $("allstrikes").addEventListener("change", (e) => { $("ladder").classList.toggle("all", e.target.checked); centre(); });
    $("keyform").addEventListener("submit", () => {
      state.key = $("keyinput").value.trim();
      sessionStorage.setItem(KEY_STORE, state.key);
      $("keyinput").value = "";
      start();
    });
    setInterval(tickAge, 250);
    if (state.key) start();
    else askForKey();
  }

  // For the console and the tests: drop the socket as a network fault would (the page reconnects).
  window.tickerChain = { dropConnection: () => state.ws && state.ws.close() };

  init();
})();
