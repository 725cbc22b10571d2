// Canvas charts for the dashboard: sparklines, candles, GEX bars and the GEX profile.
// No library: each chart is a pure function of its data and the canvas size, redrawn
// whole (a few hundred shapes at most), with colours from the page's CSS variables so
// dark mode follows the system. Each sets data-* counts on its canvas for tests.

function palette() {
  const css = getComputedStyle(document.documentElement);
  const v = (name) => css.getPropertyValue(name).trim();
  return {
    text: v("--text"), muted: v("--muted"), grid: v("--grid"), border: v("--border"),
    up: v("--up"), down: v("--down"), accent: v("--accent"), zero: v("--zero"), panel: v("--panel"),
  };
}

// Size the backing store to the displayed size times the device pixel ratio.
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(canvas.clientWidth, 10);
  const height = Math.max(canvas.clientHeight, 10);
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

// "Nice" axis ticks: 1, 2 or 5 times a power of ten.
export function ticks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(count, 1);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(t);
  return out;
}

export function fmtUsd(value) {
  const abs = Math.abs(value);
  const sign = value < 0 ? "−" : "";
  if (abs >= 1e9) return `${sign}$${(abs / 1e9).toFixed(2)}bn`;
  if (abs >= 1e6) return `${sign}$${(abs / 1e6).toFixed(1)}m`;
  if (abs >= 1e3) return `${sign}$${(abs / 1e3).toFixed(0)}k`;
  return `${sign}$${abs.toFixed(0)}`;
}

function priceDigits(step) {
  return step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
}

function message(canvas, text) {
  const { ctx, width, height } = prepare(canvas);
  const c = palette();
  ctx.fillStyle = c.muted;
  ctx.textAlign = "center";
  ctx.fillText(text, width / 2, height / 2);
}

export function drawSparkline(canvas, values) {
  const { ctx, width, height } = prepare(canvas);
  const c = palette();
  const points = values.filter((v) => Number.isFinite(v));
  canvas.dataset.points = String(points.length);
  if (points.length < 2) return;
  const max = Math.max(...points, 1);
  ctx.strokeStyle = c.accent;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = (i / (points.length - 1)) * (width - 2) + 1;
    const y = height - 2 - (v / max) * (height - 4);
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// candles: [{t: ms, o, h, l, c}] oldest first; spanMs: the time window shown.
export function drawCandles(canvas, candles, spanMs, lastPrice) {
  if (!candles.length) {
    canvas.dataset.candles = "0";
    message(canvas, "no trades in the last hour yet");
    return;
  }
  const { ctx, width, height } = prepare(canvas);
  const c = palette();
  const axisW = 62;
  const axisH = 18;
  const plotW = width - axisW;
  const plotH = height - axisH - 6;
  const end = candles[candles.length - 1].t + 60_000;
  const start = end - spanMs;
  const shown = candles.filter((k) => k.t >= start);
  // Scale to the bodies plus reasonable wicks: one bad print must not flatten the hour.
  const bodyLo = Math.min(...shown.map((k) => Math.min(k.o, k.c)));
  const bodyHi = Math.max(...shown.map((k) => Math.max(k.o, k.c)));
  const ranges = shown.map((k) => k.h - k.l).sort((a, b) => a - b);
  const reach = 3 * (bodyHi - bodyLo + ranges[Math.floor(ranges.length / 2)]);
  let lo = Math.max(Math.min(...shown.map((k) => k.l)), bodyLo - reach);
  let hi = Math.min(Math.max(...shown.map((k) => k.h)), bodyHi + reach);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const pad = (hi - lo) * 0.08;
  lo -= pad; hi += pad;
  const y = (p) => 6 + plotH - ((p - lo) / (hi - lo)) * plotH;
  const x = (t) => ((t - start) / spanMs) * plotW;
  const priceTicks = ticks(lo, hi, 5);
  const digits = priceDigits(priceTicks.length > 1 ? priceTicks[1] - priceTicks[0] : 1);
  ctx.strokeStyle = c.grid;
  ctx.fillStyle = c.muted;
  ctx.lineWidth = 1;
  ctx.textAlign = "left";
  for (const p of priceTicks) {
    ctx.beginPath(); ctx.moveTo(0, y(p)); ctx.lineTo(plotW, y(p)); ctx.stroke();
    ctx.fillText(p.toFixed(digits), plotW + 6, y(p) + 4);
  }
  ctx.textAlign = "center";
  const quarter = 15 * 60_000;
  for (let t = Math.ceil(start / quarter) * quarter; t < end; t += quarter) {
    const d = new Date(t);
    const label = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    if (x(t) > 16 && x(t) < plotW - 16) ctx.fillText(label, x(t), height - 4);
  }
  const bodyW = Math.max(1, (plotW / (spanMs / 60_000)) * 0.7);
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, plotW, 6 + plotH);
  ctx.clip(); // wicks past the scale end at its edge
  for (const k of shown) {
    const cx = x(k.t + 30_000);
    const colour = k.c >= k.o ? c.up : c.down;
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.beginPath(); ctx.moveTo(cx, y(k.h)); ctx.lineTo(cx, y(k.l)); ctx.stroke();
    const top = y(Math.max(k.o, k.c));
    ctx.fillRect(cx - bodyW / 2, top, bodyW, Math.max(1, y(Math.min(k.o, k.c)) - top));
  }
  ctx.restore();
  if (Number.isFinite(lastPrice)) {
    const ly = Math.min(Math.max(y(lastPrice), 8), 6 + plotH);
    ctx.strokeStyle = c.accent;
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(0, ly); ctx.lineTo(plotW, ly); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = c.accent;
    ctx.fillRect(plotW + 2, ly - 8, axisW - 2, 16);
    ctx.fillStyle = "#fff";
    ctx.textAlign = "left";
    ctx.fillText(lastPrice.toFixed(Math.max(digits, 2)), plotW + 5, ly + 4);
  }
  canvas.dataset.candles = String(shown.length);
}

// ---------- GEX ----------
// Every label is measured before anything is placed: the value axis is as wide as its
// widest label (a fixed width cut "−$362.7m" at the canvas edge), strike labels stay
// inside the plot, and level labels (spot, zero γ, walls) that would touch take the next
// free row instead of being drawn over each other, in a band above the data.

const ROW = 13; // px between stacked level labels, for the 11 px font
const GAP = 6; // px kept clear between two labels side by side

function markers(gex) {
  return [
    { value: gex.spot, label: "spot", colour: "accent", dash: [] },
    { value: gex.zero_gamma, label: "zero γ", colour: "zero", dash: [5, 3] },
    { value: gex.call_wall, label: "call wall", colour: "up", dash: [2, 3] },
    { value: gex.put_wall, label: "put wall", colour: "down", dash: [2, 3] },
  ].filter((m) => Number.isFinite(m.value));
}

function widest(ctx, texts) {
  return Math.max(0, ...texts.map((t) => ctx.measureText(t).width));
}

// The value axis right of the plot: a grid line and a label per tick, each label beside
// its line but kept inside the canvas; one that would touch the previous one is left out.
function valueAxis(ctx, c, ticksAt, y, plotW, height) {
  ctx.strokeStyle = c.grid;
  ctx.fillStyle = c.muted;
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  let last = null;
  for (const v of ticksAt) {
    ctx.beginPath(); ctx.moveTo(0, y(v)); ctx.lineTo(plotW, y(v)); ctx.stroke();
    const text = fmtUsd(v);
    const m = ctx.measureText(text);
    const ly = Math.min(Math.max(y(v), m.actualBoundingBoxAscent + 1), height - m.actualBoundingBoxDescent - 1);
    const box = { top: ly - m.actualBoundingBoxAscent, bottom: ly + m.actualBoundingBoxDescent };
    if (last && box.top < last.bottom + 2 && last.top < box.bottom + 2) continue;
    ctx.fillText(text, plotW + 6, ly);
    last = box;
  }
  ctx.textBaseline = "alphabetic";
}

// Strike labels under the plot, centred on their strike but never past the plot's ends;
// one that would touch its left neighbour is left out.
function strikeAxis(ctx, c, lo, hi, x, plotW, height) {
  ctx.fillStyle = c.muted;
  ctx.textAlign = "left";
  let lastRight = -Infinity;
  for (const s of ticks(lo, hi, Math.max(2, Math.floor(plotW / 50)))) {
    const text = String(+s.toFixed(2));
    const w = ctx.measureText(text).width;
    const left = Math.min(Math.max(x(s) - w / 2, 0), plotW - w);
    if (left < lastRight + GAP) continue;
    ctx.fillText(text, left, height - 4);
    lastRight = left + w;
  }
}

// Where each level's label goes: right of its line (left of it near the plot's right
// end), inside the plot, in the first row from the top where it touches no other label.
// Levels outside the plot get neither line nor label (the summary above names them).
function layoutMarkers(ctx, c, list, x, plotW) {
  const placed = [];
  for (const m of list) {
    const mx = x(m.value);
    if (!(mx >= 0 && mx <= plotW)) continue;
    const text = `${m.label} ${m.value.toFixed(2)}`;
    const w = ctx.measureText(text).width;
    const beside = mx + 4 + w <= plotW ? mx + 4 : mx - 4 - w;
    const left = Math.min(Math.max(beside, 0), Math.max(plotW - w, 0));
    let row = 0;
    while (placed.some((p) => p.row === row && left < p.left + p.w + GAP && p.left < left + w + GAP)) row++;
    placed.push({ ...m, mx, text, left, w, row, colour: c[m.colour] });
  }
  return placed;
}

// The height the labels' rows take at the top: the data is drawn below it, never under
// a label.
function markerBand(placed) {
  return placed.length ? (Math.max(...placed.map((p) => p.row)) + 1) * ROW + 2 : 0;
}

function drawMarkers(ctx, c, placed, bottom) {
  ctx.lineWidth = 1.5;
  for (const p of placed) {
    ctx.strokeStyle = p.colour;
    ctx.setLineDash(p.dash);
    ctx.beginPath(); ctx.moveTo(p.mx, 0); ctx.lineTo(p.mx, bottom); ctx.stroke();
  }
  ctx.setLineDash([]);
  ctx.lineWidth = 1;
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  for (const p of placed) {
    ctx.fillStyle = c.panel; // hides the other levels' lines behind this label
    ctx.fillRect(p.left - 2, 1 + p.row * ROW, p.w + 4, ROW);
    ctx.fillStyle = p.colour;
    ctx.fillText(p.text, p.left, 2 + p.row * ROW);
  }
  ctx.textBaseline = "alphabetic";
}

// Per-strike call (up) and put (down) GEX bars within the profile's spot range.
export function drawGexBars(canvas, gex) {
  const strikes = gex.strikes || {};
  const k = strikes.strike || [];
  const calls = strikes.call_gex_usd_per_1pct || [];
  const puts = strikes.put_gex_usd_per_1pct || [];
  const range = gex.profile && gex.profile.spot && gex.profile.spot.length
    ? [Math.min(...gex.profile.spot), Math.max(...gex.profile.spot)]
    : [Math.min(...k), Math.max(...k)];
  const idx = k.map((_, i) => i).filter((i) => k[i] >= range[0] && k[i] <= range[1]);
  if (!idx.length) {
    canvas.dataset.bars = "0";
    message(canvas, "no strikes in range");
    return;
  }
  const { ctx, width, height } = prepare(canvas);
  const c = palette();
  const axisH = 18;
  const plotH = height - axisH;
  const maxAbs = Math.max(...idx.map((i) => Math.max(Math.abs(calls[i] || 0), Math.abs(puts[i] || 0))), 1);
  const valueTicks = ticks(-maxAbs, maxAbs, Math.max(2, Math.floor(plotH / 32)));
  const plotW = width - widest(ctx, valueTicks.map(fmtUsd)) - 10;
  const lo = Math.min(...idx.map((i) => k[i]), gex.spot ?? Infinity);
  const hi = Math.max(...idx.map((i) => k[i]), gex.spot ?? -Infinity);
  const span = hi - lo || 1;
  const x = (s) => ((s - lo) / span) * (plotW - 20) + 10;
  const levels = layoutMarkers(ctx, c, markers(gex), x, plotW);
  const band = markerBand(levels);
  const mid = band + (plotH - band) / 2;
  const h = (v) => (v / maxAbs) * ((plotH - band) / 2 - 8);
  valueAxis(ctx, c, valueTicks, (v) => mid - h(v), plotW, plotH);
  const barW = Math.max(1, ((plotW - 20) / Math.max(idx.length, 1)) * 0.7);
  for (const i of idx) {
    const bx = x(k[i]) - barW / 2;
    ctx.fillStyle = c.up;
    ctx.fillRect(bx, mid - h(Math.max(calls[i] || 0, 0)), barW, h(Math.max(calls[i] || 0, 0)));
    ctx.fillStyle = c.down;
    ctx.fillRect(bx, mid, barW, h(Math.abs(Math.min(puts[i] || 0, 0))));
  }
  strikeAxis(ctx, c, lo, hi, x, plotW, height);
  drawMarkers(ctx, c, levels, plotH);
  canvas.dataset.bars = String(idx.length);
}

// Total GEX as a function of a hypothetical spot.
export function drawGexProfile(canvas, gex) {
  const spots = (gex.profile && gex.profile.spot) || [];
  const values = (gex.profile && gex.profile.gex_usd_per_1pct) || [];
  if (spots.length < 2) {
    canvas.dataset.points = "0";
    message(canvas, "no profile");
    return;
  }
  const { ctx, width, height } = prepare(canvas);
  const c = palette();
  const axisH = 18;
  const plotH = height - axisH;
  const lo = Math.min(...spots);
  const hi = Math.max(...spots);
  let vmin = Math.min(...values, 0);
  let vmax = Math.max(...values, 0);
  if (vmax - vmin < 1) { vmin -= 1; vmax += 1; }
  const valueTicks = ticks(vmin, vmax, Math.max(2, Math.floor(plotH / 32)));
  const plotW = width - widest(ctx, valueTicks.map(fmtUsd)) - 10;
  const x = (s) => ((s - lo) / (hi - lo)) * (plotW - 20) + 10;
  const shown = markers(gex).filter((m) => m.label === "spot" || m.label === "zero γ");
  const levels = layoutMarkers(ctx, c, shown, x, plotW);
  const band = markerBand(levels);
  const y = (v) => band + 8 + (plotH - band - 16) * (1 - (v - vmin) / (vmax - vmin));
  valueAxis(ctx, c, valueTicks, y, plotW, plotH);
  ctx.strokeStyle = c.muted;
  ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(plotW, y(0)); ctx.stroke();
  ctx.strokeStyle = c.text;
  ctx.lineWidth = 2;
  ctx.beginPath();
  spots.forEach((s, i) => (i === 0 ? ctx.moveTo(x(s), y(values[i])) : ctx.lineTo(x(s), y(values[i]))));
  ctx.stroke();
  ctx.lineWidth = 1;
  strikeAxis(ctx, c, lo, hi, x, plotW, height);
  drawMarkers(ctx, c, levels, plotH);
  canvas.dataset.points = String(spots.length);
}
