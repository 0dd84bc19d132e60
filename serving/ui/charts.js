// Line and bar charts on a plain <canvas>, sized to their box at each draw (so they
// follow the layout from phone to desktop); each chart also gets a text legend
// with the latest values, which screen readers and tests can read.

import { el } from "./dom.js";

const COLORS = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#4b5563"];
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };

function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(120, canvas.clientWidth);
  const height = Math.max(80, canvas.clientHeight);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

// The smallest of 1, 2, 5 x 10^k at or above `value`: round axis labels.
function niceTop(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((top) => top >= value);
}

const plain = (v) => String(Math.round(v * 100) / 100);

function axes(ctx, width, height, yMax, format) {
  ctx.strokeStyle = "#cbd5e1";
  ctx.fillStyle = "#475569";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 2; i += 1) {
    const y = PAD.top + ((height - PAD.top - PAD.bottom) * i) / 2;
    ctx.beginPath();
    ctx.moveTo(PAD.left, y);
    ctx.lineTo(width - PAD.right, y);
    ctx.stroke();
    ctx.fillText(format(yMax * (1 - i / 2)), 2, y + 4);
  }
}

// series: [{ label, points: [[time_s, value], ...] }]
export function drawLines(canvas, legend, series, { format = (v) => String(v), yMax } = {}) {
  const { ctx, width, height } = prepare(canvas);
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    ctx.fillStyle = "#64748b";
    ctx.fillText("no data yet", PAD.left, height / 2);
    legend.replaceChildren(el("li", { class: "muted" }, "no data yet"));
    return;
  }
  const t0 = Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const top = yMax !== undefined ? yMax : niceTop(Math.max(1, ...all.map((p) => p[1])));
  axes(ctx, width, height, top, yMax !== undefined ? format : plain);
  const x = (t) => PAD.left + ((width - PAD.left - PAD.right) * (t - t0)) / (t1 - t0);
  const y = (v) => height - PAD.bottom - ((height - PAD.top - PAD.bottom) * v) / top;
  ctx.fillStyle = "#475569";
  ctx.fillText(`last ${Math.round(t1 - t0)} s`, PAD.left, height - 6);
  series.forEach((s, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 2;
    ctx.beginPath();
    s.points.forEach(([t, v], j) => (j ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
    const [lt, lv] = s.points[s.points.length - 1];
    ctx.fillRect(x(lt) - 2, y(lv) - 2, 4, 4);
  });
  legend.replaceChildren(...series.map((s, i) => el("li", { "data-series": s.label },
    el("span", { class: `swatch c${i % COLORS.length}`, "aria-hidden": "true" }),
    `${s.label}: ${format(s.points[s.points.length - 1][1])}`)));
}

// bars: [[label, value], ...]
export function drawBars(canvas, bars, { format = (v) => String(v) } = {}) {
  const { ctx, width, height } = prepare(canvas);
  if (!bars.length) {
    ctx.fillStyle = "#64748b";
    ctx.fillText("no round yet", PAD.left, height / 2);
    return;
  }
  const top = niceTop(Math.max(0.1, ...bars.map((b) => b[1])));
  axes(ctx, width, height, top, format);
  const slot = (width - PAD.left - PAD.right) / bars.length;
  bars.forEach(([label, value], i) => {
    const h = ((height - PAD.top - PAD.bottom) * value) / top;
    ctx.fillStyle = COLORS[i % COLORS.length];
    ctx.fillRect(PAD.left + i * slot + slot * 0.15, height - PAD.bottom - h, slot * 0.7, h);
    ctx.fillStyle = "#334155";
    ctx.fillText(label, PAD.left + i * slot + slot * 0.15, height - 6);
  });
}
