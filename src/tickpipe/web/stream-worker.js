// The dashboard's WebSocket, in a worker so the page's main thread never parses events.
// The page asks the server to conflate (latest trade and quote per frame, 4 frames a
// second), so a busy symbol costs the API and the page little; whatever arrives is read
// here, and the page gets a summary (latest quote, last trades, the 1-minute candles they
// touched) at most SNAPSHOT_MS apart.

const SNAPSHOT_MS = 250;
const TRADES_KEPT = 15;

let socket = null;
let pending = null;
let timer = null;

function fresh() {
  return { quote: null, trades: [], minutes: new Map(), events: 0, bytes: 0 };
}

function tradeMinute(minutes, t) {
  const ms = t.ts_event / 1e6;
  const minute = Math.floor(ms / 60_000) * 60_000;
  const bar = minutes.get(minute);
  if (bar) {
    bar.h = Math.max(bar.h, t.price);
    bar.l = Math.min(bar.l, t.price);
    bar.c = t.price;
  } else {
    minutes.set(minute, { t: minute, o: t.price, h: t.price, l: t.price, c: t.price });
  }
}

function onEvents(events) {
  for (const e of events) {
    if (e.type === "trade") {
      tradeMinute(pending.minutes, e);
      pending.trades.push({ time: e.time, price: e.price, size: e.size });
    } else if (e.type === "quote") {
      pending.quote = { time: e.time, bid: e.bid, ask: e.ask, bid_size: e.bid_size, ask_size: e.ask_size };
    }
  }
  if (pending.trades.length > TRADES_KEPT) pending.trades.splice(0, pending.trades.length - TRADES_KEPT);
  pending.events += events.length;
}

function flush() {
  if (!pending || (!pending.events && !pending.quote)) return;
  postMessage({
    kind: "snapshot",
    quote: pending.quote,
    trades: pending.trades,
    minutes: [...pending.minutes.values()],
    events: pending.events,
    bytes: pending.bytes,
  });
  pending = fresh();
}

function close() {
  if (timer) clearInterval(timer);
  timer = null;
  if (socket) {
    socket.onclose = null;
    socket.close();
  }
  socket = null;
}

self.onmessage = (message) => {
  const { action, url } = message.data;
  close();
  if (action !== "open") return;
  pending = fresh();
  socket = new WebSocket(url);
  timer = setInterval(flush, SNAPSHOT_MS);
  socket.onmessage = (m) => {
    pending.bytes += m.data.length;
    const data = JSON.parse(m.data);
    if (Array.isArray(data)) onEvents(data);
    else if (data.error) postMessage({ kind: "error", code: data.error.code, message: data.error.message });
    else if (data.type === "subscribed") postMessage({ kind: "subscribed", symbols: data.symbols });
  };
  socket.onclose = (event) => {
    flush();
    postMessage({ kind: "closed", code: event.code });
    close();
  };
};
