// tickpipe dashboard. Polls public status every STATUS_MS; with an API key (local storage)
// also samples one symbol over the WebSocket (conflated by the server, read in a worker),
// the last hour of 1-minute bars, quality records and GEX. Every poll waits for the previous one (no pile-up) and
// pauses while the tab is hidden. The DOM is updated in place, keyed by source name, so
// new feeds appear as rows with no page change.

import { drawCandles, drawGexBars, drawGexProfile, drawSparkline, fmtUsd } from "./charts.js";

const STATUS_MS = 1500;
const SERVICES_MS = 2000;
const QUALITY_MS = 10_000;
const GEX_MS = 3000;
const BARS_MS = 30_000;
const CONFLATE_MS = 250;
const SYMBOLS_MS = 30_000;
const SPARK_POINTS = 60;
const HOUR_MS = 3_600_000;
const KEY_STORAGE = "tickpipe.apiKey";

const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem(KEY_STORAGE) || "",
  status: null,
  statusAt: 0,
  prevEvents: new Map(), // source -> [events, ms]
  rates: new Map(), // source -> recent events/s
  prevApi: null,
  apiRate: null,
  symbol: "",
  candles: [],
  lastPrice: NaN,
  worker: null,
  streamRetry: 0,
  streamTimer: null,
  gexSymbol: "",
  lastGex: null,
  probe: null,
  pollers: [],
};

// ---------- helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function fmtInt(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

function ageOf(ns) {
  return ns ? Math.max(0, Date.now() / 1000 - ns / 1e9) : NaN;
}

function clock(iso) {
  return iso ? iso.slice(11, 23) : "";
}

function notice(text, bad = false) {
  const node = $("notice");
  node.hidden = !text;
  node.textContent = text || "";
  node.classList.toggle("bad", bad);
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", auth = false } = {}) {
  const headers = {};
  if (auth) headers.Authorization = `Bearer ${state.key}`;
  const response = await fetch(path, { method, headers, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const err = body.error || {};
    throw new HttpError(response.status, err.code || "error", err.message || response.statusText);
  }
  return body;
}

// Run fn every ms, each run after the previous one settles; skipped while hidden.
function every(ms, fn, { needsKey = false } = {}) {
  const poller = { timer: null, running: false };
  const run = async () => {
    poller.timer = null;
    if (!document.hidden && (!needsKey || state.key)) {
      poller.running = true;
      try { await fn(); } catch (err) { report(err); }
      poller.running = false;
    }
    poller.timer = setTimeout(run, ms);
  };
  poller.now = () => {
    if (poller.running) return;
    clearTimeout(poller.timer);
    run();
  };
  state.pollers.push(poller);
  run();
  return poller;
}

function report(err) {
  if (err instanceof HttpError) {
    if (err.status === 401) notice("The API key was refused (unknown or revoked): enter another one.", true);
    else if (err.status === 403) notice(`This key cannot do that: ${err.message}.`, true);
    else if (err.status === 429) notice("Rate limited: the page will retry.", true);
    return err;
  }
  return err;
}

// ---------- services ----------

function card(id, title) {
  let node = document.querySelector(`.card[data-card="${id}"]`);
  if (!node) {
    node = el("div", { class: "card", "data-card": id },
      el("div", { class: "title", text: title }), el("div", { class: "value" }), el("div", { class: "sub" }));
    $("service-cards").append(node);
  }
  return {
    set(value, sub = "", level = "") {
      setText(node.querySelector(".value"), value);
      setText(node.querySelector(".sub"), sub);
      node.classList.toggle("bad", level === "bad");
      node.classList.toggle("warn", level === "warn");
    },
  };
}

function pipelineStatus(raw) {
  // An API-only process (--role api) serves the ingest process's status under "ingest".
  if (raw && raw.role === "api") return raw.ingest || null;
  return raw;
}

function renderServices(st) {
  const services = st.services || {};
  const journal = services.journal || {};
  const lake = services.lake || {};
  card("uptime", "Uptime").set(fmtDuration(st.uptime_s), `${fmtInt(st.accepted_total)} events accepted`);
  const totalRate = [...state.rates.values()].reduce((a, r) => a + (r.at(-1) || 0), 0);
  card("ingest", "Ingest").set(`${fmtInt(totalRate)}/s`,
    `${fmtInt(st.quarantined_total)} quarantined · ${fmtInt(st.gaps_total)} gaps`);
  renderHotStore();
  card("lake", "Lake").set(fmtBytes(lake.bytes),
    `${fmtInt(lake.files_written)} files written · ${fmtInt(lake.rows_written)} rows`,
    lake.flush_errors ? "warn" : "");
  const blocked = journal.blocked_since;
  card("journal", "Journal backlog").set(`${fmtInt(journal.open_rows)} rows`,
    blocked ? `blocked ${fmtDuration(Date.now() / 1000 - blocked)}: ${journal.last_error || ""}`
      : `group commit ${journal.mean_append_ms ?? "–"} ms mean · queue ${services.hub_queue ?? 0}`,
    blocked ? "bad" : journal.errors ? "warn" : "");
  card("bus", "Bus").set(String(services.bus || "–"),
    `${fmtInt(services.bus_subscribers)} subscribers · ${fmtInt(services.bus_dropped)} dropped`);
  const gex = st.gex || {};
  if (gex.recomputes !== undefined) {
    card("gex-engine", "GEX engine").set(`${gex.recompute_ms_last ?? "–"} ms`,
      `${fmtInt(gex.recomputes)} recomputes · max ${gex.recompute_ms_max ?? "–"} ms`);
  }
}

// Kind and round trip from the services probe, write health from the status's sink.
function renderHotStore() {
  const hot = state.probe?.hot_store || {};
  const sink = (state.status?.sinks || {}).hot_store || {};
  const kind = String(hot.kind || state.status?.services?.hot_store || "–");
  const symbols = hot.symbols ? Math.max(0, ...Object.values(hot.symbols)) : 0;
  if (hot.reachable === false) {
    card("hot", "Hot store").set(kind, `unreachable: ${hot.error || ""}`, "bad");
  } else if (sink.healthy === false) {
    card("hot", "Hot store").set(kind, `writes failing: ${sink.last_error || ""}`, "bad");
  } else {
    const rtt = Number.isFinite(hot.rtt_ms) ? ` · ${hot.rtt_ms.toFixed(2)} ms` : "";
    card("hot", "Hot store").set(`${kind}${rtt}`, `healthy · round trip now · ${symbols} symbols`,
      hot.rtt_ms > 50 ? "warn" : "");
  }
}

function renderProbe(facts) {
  state.probe = facts;
  renderHotStore();
  const journal = facts.journal || {};
  const lag = journal.flush_lag_s;
  card("flush", "Flush lag").set(lag == null ? "none" : fmtDuration(lag),
    `${journal.closed_segments ?? 0} closed + ${journal.open_segments ?? 0} open segments waiting`,
    lag > 120 ? "bad" : lag > 30 ? "warn" : "");
  const a = facts.api;
  if (a) {
    const now = Date.now();
    if (state.prevApi) {
      const dt = (now - state.prevApi[1]) / 1000;
      state.apiRate = dt > 0 ? (a.requests - state.prevApi[0]) / dt : null;
    }
    state.prevApi = [a.requests, now];
    const recent = a.recent || {};
    card("api", "API").set(state.apiRate == null ? "–" : `${state.apiRate.toFixed(1)} req/s`,
      `p50 ${recent.p50_ms ?? "–"} ms · p99 ${recent.p99_ms ?? "–"} ms · ${fmtInt(a.errors_5xx)} 5xx`,
      a.errors_5xx ? "warn" : "");
  }
}

// ---------- feeds ----------

const FEED_COLUMNS = ["Feed", "State", "Events/s", "Events", "Last event", "Latency p50 / p99",
  "Quarantined", "Gaps", "Restarts", "Actions"];

function feedRow(name) {
  let row = document.querySelector(`#feeds-table tr[data-source="${CSS.escape(name)}"]`);
  if (row) return row;
  const cells = FEED_COLUMNS.map((label) => el("td", { "data-label": label }));
  const [nameCell, stateCell, rateCell, eventsCell, ageCell, latencyCell, quarCell, gapsCell, restartsCell, actionsCell] = cells;
  nameCell.className = "feed-name";
  nameCell.append(el("strong", { text: name }), el("div", { class: "feed-phase" }), el("div", { class: "feed-details" }));
  stateCell.append(el("span", { class: "pill state" }), el("div", { class: "feed-error" }));
  rateCell.append(el("div", { class: "rate" }, el("canvas", { class: "spark" }), el("span", { class: "num rate-value" })));
  eventsCell.className = "num events";
  ageCell.className = "num age";
  latencyCell.className = "num latency";
  quarCell.className = "num quarantined";
  gapsCell.className = "num gaps";
  restartsCell.className = "num restarts";
  actionsCell.className = "actions-cell admin-only";
  const restart = el("button", { type: "button", class: "restart", text: "Restart" });
  const stop = el("button", { type: "button", class: "stop danger", text: "Stop" });
  restart.addEventListener("click", () => sourceAction(name, "restart", restart));
  stop.addEventListener("click", () => sourceAction(name, "stop", stop));
  actionsCell.append(el("div", { class: "actions" }, restart, stop));
  row = el("tr", { "data-source": name }, ...cells);
  $("feeds-table").tBodies[0].append(row);
  return row;
}

function stateText(src) {
  if (src.status === "backoff" && src.next_retry_ns) {
    const wait = Math.max(0, src.next_retry_ns / 1e9 - Date.now() / 1000);
    return `backoff · retry in ${wait.toFixed(0)} s`;
  }
  return src.status || "unknown";
}

function renderDetails(container, src) {
  const facts = { ...(src.details || {}) };
  for (const [k, v] of Object.entries(src.counters || {})) facts[`counter: ${k}`] = v;
  const keys = Object.keys(facts).sort();
  const signature = JSON.stringify(keys.map((k) => [k, facts[k]]));
  if (container.dataset.signature === signature) return;
  container.dataset.signature = signature;
  const wasOpen = container.querySelector("details")?.open;
  container.replaceChildren();
  if (!keys.length) return;
  const list = el("dl");
  for (const k of keys) {
    const v = facts[k];
    list.append(el("dt", { text: k }), el("dd", { text: typeof v === "object" ? JSON.stringify(v) : String(v) }));
  }
  const details = el("details", {}, el("summary", { text: `${keys.length} details` }), list);
  details.open = !!wasOpen;
  container.append(details);
}

function renderFeeds(st) {
  const now = Date.now();
  const quality = st.quality || {};
  const seen = new Set();
  for (const src of st.sources || []) {
    const name = src.name;
    seen.add(name);
    const row = feedRow(name);
    const prev = state.prevEvents.get(name);
    const rates = state.rates.get(name) || [];
    if (prev && now > prev[1]) rates.push(Math.max(0, (src.events - prev[0]) / ((now - prev[1]) / 1000)));
    if (rates.length > SPARK_POINTS) rates.shift();
    state.rates.set(name, rates);
    state.prevEvents.set(name, [src.events, now]);
    const pill = row.querySelector(".state");
    setText(pill, stateText(src));
    pill.className = `pill state state-${src.status}`;
    setText(row.querySelector(".feed-phase"), src.phase || "");
    const error = src.status !== "running" && src.last_error ? src.last_error : "";
    setText(row.querySelector(".feed-error"), error);
    renderDetails(row.querySelector(".feed-details"), src);
    setText(row.querySelector(".rate-value"), rates.length ? fmtInt(rates.at(-1)) : "–");
    drawSparkline(row.querySelector("canvas.spark"), rates);
    setText(row.querySelector(".events"), fmtInt(src.events));
    const age = ageOf(src.last_event_ns);
    setText(row.querySelector(".age"), Number.isFinite(age) ? `${fmtDuration(age)} ago` : "never");
    const lat = src.latency_ms;
    setText(row.querySelector(".latency"), lat ? `${lat.p50} / ${lat.p99} ms` : "–");
    const rejected = Object.values((quality.rejected || {})[name] || {}).reduce((a, b) => a + b, 0);
    setText(row.querySelector(".quarantined"), fmtInt(rejected + (src.rejected || 0)));
    const gaps = Object.entries(quality.gaps || {})
      .filter(([k]) => k.slice(0, k.lastIndexOf(".")) === name)
      .reduce((a, [, n]) => a + n, 0);
    setText(row.querySelector(".gaps"), fmtInt(gaps));
    setText(row.querySelector(".restarts"), fmtInt(src.restarts));
    const stopButton = row.querySelector("button.stop");
    stopButton.disabled = src.status === "stopped" || src.status === "finished";
  }
  for (const row of document.querySelectorAll("#feeds-table tr[data-source]")) {
    if (!seen.has(row.dataset.source)) row.remove();
  }
}

async function sourceAction(name, action, button) {
  button.disabled = true;
  try {
    await api(`/api/v1/admin/sources/${encodeURIComponent(name)}/${action}`, { method: "POST", auth: true });
    notice(`${action === "restart" ? "Restarting" : "Stopping"} ${name}.`);
    statusPoller.now();
  } catch (err) {
    report(err);
    if (err instanceof HttpError && err.status === 404) notice(err.message, true);
  } finally {
    button.disabled = false;
  }
}

async function pollStatus() {
  try {
    const raw = await api("/api/v1/status");
    const st = pipelineStatus(raw);
    state.statusAt = Date.now();
    setConn(true);
    if (!st) {
      notice("This API process has not read the ingest process's status yet.");
      return;
    }
    state.status = st;
    renderFeeds(st);
    renderServices(st);
    updateGexChoices(st);
    setText($("updated"), `updated ${new Date().toLocaleTimeString()}`);
  } catch (err) {
    setConn(false);
    throw err;
  }
}

function setConn(ok) {
  const node = $("conn");
  setText(node, ok ? "live" : "offline");
  node.className = `pill ${ok ? "pill-ok" : "pill-bad"}`;
}

// ---------- data sampling ----------

async function pollSymbols() {
  const { symbols } = await api("/api/v1/dashboard/symbols", { auth: true });
  const select = $("symbol");
  const current = [...select.options].map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(symbols)) {
    select.replaceChildren(...symbols.map((s) => el("option", { value: s, text: s })));
  }
  if (!state.symbol && symbols.length) {
    const preferred = symbols.find((s) => state.status?.gex?.underlyings?.[s]) || symbols[0];
    select.value = preferred;
    chooseSymbol(preferred);
  } else if (state.symbol) {
    select.value = state.symbol;
  }
}

function streamUrl(symbol) {
  // The one place the key travels in a URL: browsers cannot set WebSocket headers.
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // conflate: the server sends at most one frame per CONFLATE_MS with the latest trade and
  // quote, so the page samples the symbol however busy it is; candles stay exact through
  // the bars API, refetched every BARS_MS.
  const query = new URLSearchParams({
    symbols: symbol, types: "trade,quote", conflate: String(CONFLATE_MS), token: state.key,
  });
  return `${scheme}://${location.host}/api/v1/stream?${query}`;
}

function setStream(text, level) {
  const node = $("stream-state");
  setText(node, text);
  node.className = `pill pill-${level}`;
}

function openStream() {
  clearTimeout(state.streamTimer);
  if (!state.key || !state.symbol) return;
  if (!state.worker) {
    state.worker = new Worker("/web/stream-worker.js");
    state.worker.onmessage = onStreamMessage;
  }
  setStream("connecting", "wait");
  state.worker.postMessage({ action: "open", url: streamUrl(state.symbol) });
}

function closeStream() {
  clearTimeout(state.streamTimer);
  if (state.worker) state.worker.postMessage({ action: "close" });
  setStream("idle", "wait");
}

let streamCounts = { events: 0, bytes: 0, since: Date.now() };

function onStreamMessage({ data }) {
  if (data.kind === "subscribed") {
    state.streamRetry = 0;
    setStream("live", "ok");
  } else if (data.kind === "error") {
    setStream(data.code, "bad");
    if (data.code === "unauthorized" || data.code === "forbidden") {
      notice(`Live stream refused: ${data.message}`, true);
      state.streamRetry = 99; // no retry with a key that cannot stream
    }
  } else if (data.kind === "closed") {
    if (state.streamRetry < 99) {
      const delay = Math.min(30_000, 1000 * 2 ** state.streamRetry++);
      setStream(`reconnecting in ${Math.round(delay / 1000)} s`, "wait");
      state.streamTimer = setTimeout(openStream, delay);
    }
  } else if (data.kind === "snapshot") {
    applySnapshot(data);
  }
}

function applySnapshot(snap) {
  streamCounts.events += snap.events;
  streamCounts.bytes += snap.bytes;
  const elapsed = (Date.now() - streamCounts.since) / 1000;
  if (elapsed >= 2) {
    setText($("stream-rate"), `${fmtInt(streamCounts.events / elapsed)} events/s · ${fmtBytes(streamCounts.bytes / elapsed)}/s`);
    streamCounts = { events: 0, bytes: 0, since: Date.now() };
  }
  if (snap.quote) {
    const q = snap.quote;
    setText($("q-bid"), String(q.bid));
    setText($("q-ask"), String(q.ask));
    setText($("q-bid-size"), `× ${fmtInt(q.bid_size)}`);
    setText($("q-ask-size"), `× ${fmtInt(q.ask_size)}`);
  }
  if (snap.trades.length) {
    const last = snap.trades.at(-1);
    state.lastPrice = last.price;
    setText($("q-last"), String(last.price));
    setText($("q-time"), clock(last.time));
    const body = $("trades").tBodies[0];
    let prior = Number(body.rows[0]?.dataset.price ?? NaN);
    const rows = [];
    for (const t of snap.trades) {
      const dir = t.price > prior ? "up" : t.price < prior ? "down" : "";
      prior = t.price;
      const row = el("tr", { "data-price": String(t.price) },
        el("td", { text: clock(t.time) }), el("td", { class: `num ${dir}`, text: String(t.price) }),
        el("td", { class: "num", text: fmtInt(t.size) }));
      rows.unshift(row);
    }
    body.prepend(...rows);
    while (body.rows.length > 15) body.deleteRow(-1);
  }
  for (const m of snap.minutes) mergeMinute(m);
  if (snap.minutes.length) scheduleDraw();
}

function mergeMinute(m) {
  const candles = state.candles;
  const last = candles.at(-1);
  if (last && last.t === m.t) {
    last.h = Math.max(last.h, m.h);
    last.l = Math.min(last.l, m.l);
    last.c = m.c;
  } else if (!last || m.t > last.t) {
    candles.push({ ...m });
    while (candles.length && candles[0].t < m.t - HOUR_MS) candles.shift();
  }
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    drawCandles($("price-chart"), state.candles, HOUR_MS, state.lastPrice);
  });
}

async function loadBars() {
  if (!state.symbol) return;
  const symbol = state.symbol;
  const end = new Date(Date.now() + 60_000);
  const start = new Date(Math.floor((Date.now() - HOUR_MS) / 60_000) * 60_000);
  const query = new URLSearchParams({
    symbols: symbol, interval: "1m", start_time: start.toISOString(), end_time: end.toISOString(),
  });
  const { data } = await api(`/api/v1/ticks/historical?${query}`, { auth: true });
  if (symbol !== state.symbol) return;
  const fetched = data.map((b) => ({ t: b.time_ns / 1e6, o: b.open, h: b.high, l: b.low, c: b.close }));
  // keep live candles newer than the fetch; the fetched ones are authoritative before that
  const newest = fetched.at(-1)?.t ?? -Infinity;
  const live = state.candles.filter((c) => c.t > newest);
  const current = state.candles.find((c) => c.t === newest);
  if (current && fetched.length) {
    const f = fetched.at(-1);
    f.h = Math.max(f.h, current.h);
    f.l = Math.min(f.l, current.l);
  }
  state.candles = [...fetched, ...live];
  setText($("price-note"), `(${symbol})`);
  scheduleDraw();
}

function chooseSymbol(symbol) {
  if (symbol === state.symbol) return;
  state.symbol = symbol;
  state.candles = [];
  state.lastPrice = NaN;
  $("trades").tBodies[0].replaceChildren();
  for (const id of ["q-bid", "q-ask", "q-last"]) setText($(id), "–");
  for (const id of ["q-bid-size", "q-ask-size", "q-time"]) setText($(id), "");
  state.streamRetry = 0;
  openStream();
  barsPoller.now();
}

// ---------- quality ----------

function fillTable(table, rows, columns) {
  const body = table.tBodies[0];
  const signature = JSON.stringify(rows.map((r) => [r.ts_event, r.source, r.symbol, r.seq]));
  if (body.dataset.signature === signature) return;
  body.dataset.signature = signature;
  if (!rows.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: String(columns.length), class: "muted", text: "none in the last 24 h" })));
    return;
  }
  body.replaceChildren(...rows.map((r) => el("tr", {}, ...columns.map(([key, cls]) => {
    let value = key === "time" ? clock(r.time) : r[key];
    if (typeof value === "number" && !Number.isInteger(value)) value = +value.toFixed(3);
    return el("td", { class: cls || "", text: value == null ? "" : String(value) });
  }))));
}

async function pollQuality() {
  const [gaps, quarantine] = await Promise.all([
    api("/api/v1/quality/gaps?limit=10", { auth: true }),
    api("/api/v1/quality/quarantine?limit=10", { auth: true }),
  ]);
  fillTable($("gaps-table"), gaps.data, [["time"], ["source"], ["symbol"], ["kind"], ["gap"], ["seconds", "num"], ["missing_seq", "num"]]);
  fillTable($("quarantine-table"), quarantine.data, [["time"], ["source"], ["symbol"], ["kind"], ["rule"], ["reason", "reason"]]);
}

// ---------- GEX ----------

function updateGexChoices(st) {
  const underlyings = Object.keys(st.gex?.underlyings || {}).sort();
  const select = $("gex-symbol");
  const current = [...select.options].map((o) => o.value);
  if (JSON.stringify(current) !== JSON.stringify(underlyings)) {
    select.replaceChildren(...underlyings.map((s) => el("option", { value: s, text: s })));
    if (state.gexSymbol && underlyings.includes(state.gexSymbol)) select.value = state.gexSymbol;
  }
  if (!state.gexSymbol && underlyings.length) {
    state.gexSymbol = underlyings[0];
    gexPoller?.now();
  }
  if (!underlyings.length) setText($("gex-summary"), "no option chain yet");
}

async function pollGex() {
  if (!state.gexSymbol) return;
  let gex;
  try {
    gex = await api(`/api/v1/gex/${encodeURIComponent(state.gexSymbol)}`, { auth: true });
  } catch (err) {
    if (err instanceof HttpError && (err.status === 404 || err.status === 503)) {
      setText($("gex-summary"), err.message);
      return;
    }
    throw err;
  }
  const f = (v) => (Number.isFinite(v) ? v.toFixed(2) : "–");
  setText($("gex-summary"),
    `spot ${f(gex.spot)} · zero γ ${f(gex.zero_gamma)} · call wall ${f(gex.call_wall)} · put wall ${f(gex.put_wall)} · ` +
    `total ${fmtUsd(gex.total_gex_usd_per_1pct)} per 1 % · chain ${gex.chain_age_s?.toFixed(1)} s old`);
  requestAnimationFrame(() => {
    drawGexBars($("gex-chart"), gex);
    drawGexProfile($("gex-profile"), gex);
  });
  state.lastGex = gex;
}

// ---------- key ----------

function applyKey() {
  const has = !!state.key;
  $("key-form").hidden = has;
  $("key-state").hidden = !has;
  setText($("key-id"), has ? `${state.key.split("_").slice(0, 2).join("_")}_…` : "");
  $("locked").hidden = has;
  for (const node of document.querySelectorAll(".needs-key")) node.hidden = !has;
  document.body.classList.toggle("has-key", has); // shows the feeds' action buttons
  if (has) {
    symbolsPoller.now();
    qualityPoller.now();
    gexPoller.now();
  } else {
    closeStream();
    state.symbol = "";
  }
}

function bindKeyForm() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    if (!value) return;
    state.key = value;
    localStorage.setItem(KEY_STORAGE, value);
    $("key-input").value = "";
    notice("");
    applyKey();
  });
  $("key-forget").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    state.key = "";
    notice("The key is forgotten: this browser no longer stores it.");
    applyKey();
  });
  $("symbol").addEventListener("change", (event) => chooseSymbol(event.target.value));
  $("gex-symbol").addEventListener("change", (event) => {
    state.gexSymbol = event.target.value;
    gexPoller.now();
  });
}

// ---------- start ----------

const statusPoller = every(STATUS_MS, pollStatus);
every(SERVICES_MS, async () => renderProbe(await api("/api/v1/dashboard/services")));
const symbolsPoller = every(SYMBOLS_MS, pollSymbols, { needsKey: true });
const barsPoller = every(BARS_MS, loadBars, { needsKey: true });
const qualityPoller = every(QUALITY_MS, pollQuality, { needsKey: true });
const gexPoller = every(GEX_MS, pollGex, { needsKey: true });
bindKeyForm();
applyKey();

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) for (const p of state.pollers) p.now();
});
new ResizeObserver(() => {
  scheduleDraw();
  if (state.lastGex) {
    drawGexBars($("gex-chart"), state.lastGex);
    drawGexProfile($("gex-profile"), state.lastGex);
  }
}).observe(document.body);
