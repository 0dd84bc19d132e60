// The live part of the ops view, polled while it is shown: the learner's status and
// per-version statistics (thumbs-up rate, requests, handoff rate, compute per request),
// kept as time series in the page and drawn without a reload.

import { call } from "./api.js";
import { drawBars, drawLines } from "./charts.js";
import { $, ago, el, setText, short, versionCode } from "./dom.js";

export const POLL_MS = 5000;
const KEEP = 120; // points per series: ten minutes at one poll every 5 s
const CHARTS = {
  thumbs: { field: "thumbs_up_rate", yMax: 1, format: (v) => `${Math.round(v * 100)}%` },
  requests: { field: "requests", format: (v) => String(Math.round(v)) },
  handoff: { field: "handoff_rate", yMax: 1, format: (v) => `${Math.round(v * 100)}%` },
  compute: { field: "compute_per_request", format: (v) => v.toFixed(v < 10 ? 1 : 0) },
};
const live = { timer: null, busy: false, tenant: null, token: "", series: {} };

function reset() {
  live.series = Object.fromEntries(Object.keys(CHARTS).map((name) => [name, new Map()]));
}
reset();

export function startLive(tenant, token) {
  if (tenant !== live.tenant) reset();
  live.tenant = tenant;
  live.token = token;
  stopLive();
  poll();
}

export function stopLive() {
  clearTimeout(live.timer);
  live.timer = null;
}

async function poll() {
  if (live.busy) return;
  live.busy = true;
  try {
    const [stats, learner] = await Promise.allSettled([
      call("/admin/stats", { token: live.token }),
      call("/admin/learner/status", { token: live.token }),
    ]);
    if (stats.status === "fulfilled") takeStats(stats.value.data);
    else setText($("stats-state"), `Live data unavailable: ${stats.reason.describe()}`, "error");
    if (learner.status === "fulfilled") showLearner(learner.value.data);
    else showLearner({ state: "unreachable", error: learner.reason.describe() });
  } finally {
    live.busy = false;
    drawAll();
    clearTimeout(live.timer);
    live.timer = setTimeout(poll, POLL_MS);
  }
}

function takeStats(stats) {
  let rows = stats.versions.filter((r) => r.tenant === live.tenant);
  const fromLedger = rows.length > 0;
  if (!fromLedger) rows = stats.ingress.filter((r) => r.tenant === live.tenant);
  for (const [name, chart] of Object.entries(CHARTS)) {
    for (const row of rows) {
      const value = row[chart.field];
      if (value === null || value === undefined) continue;
      const label = row.version === "base" ? "base" : short(row.version);
      const points = live.series[name].get(label) || [];
      points.push([stats.at, value]);
      live.series[name].set(label, points.slice(-KEEP));
    }
  }
  const when = new Date(stats.at * 1000).toLocaleTimeString();
  const problems = stats.errors.length ? ` (partial: ${stats.errors.join("; ")})` : "";
  setText($("stats-state"), `Updated ${when}; ${fromLedger ? "all ingresses (compute ledger)"
    : "this ingress's counters"}${problems}`, problems ? "error" : "");
}

function drawAll() {
  if ($("ops").hidden) return;
  for (const [name, chart] of Object.entries(CHARTS)) {
    const series = [...live.series[name]].map(([label, points]) => ({ label, points }));
    drawLines($(`chart-${name}`), $(`legend-${name}`), series, chart);
  }
}

const STATES = {
  running: "Learner running",
  failing: "Learner failing",
  stale: "Learner stale: stopped or stuck",
  missing: "No learner has reported",
  unreachable: "Learner status unreachable",
  unavailable: "Learner status unavailable",
};

function showLearner(reading) {
  const badge = $("learner-state");
  const status = reading.status || {};
  const age = reading.age_s !== null && reading.age_s !== undefined
    ? ` (updated ${ago(reading.age_s)})` : "";
  setText(badge, `${STATES[reading.state] || reading.state}${age}`, reading.state);
  badge.dataset.state = reading.state;
  const facts = [];
  const fact = (name, ...value) => facts.push(el("dt", {}, name), el("dd", {}, ...value));
  if (reading.error) fact("Why", reading.error);
  if (status.failing) {
    fact("Failing", `${status.failing.consecutive} step(s) in a row: ${status.failing.last_error}`);
  }
  if (reading.status) {
    fact("Backlog", `${status.backlog || 0} feedback event(s) waiting`);
    fact("Rounds", String(status.rounds || 0));
    fact("Last version", versionCode(status.last_version));
    if (status.round) {
      const steps = status.round.steps ? ` step ${status.round.step || 0}/${status.round.steps}` : "";
      fact("Round now", `${status.round.tenant}: ${status.round.phase}${steps}`);
    }
    const last = status.last_round;
    if (last) {
      const total = Object.values(last.timings || {}).reduce((a, b) => a + b, 0);
      fact("Last round", `${last.tenant}: ${last.outcome} (${total.toFixed(1)} s)`);
    }
    for (const canary of status.canaries || []) {
      fact("Canary", `${canary.tenant} ${short(canary.canary)}: ${canary.canary_up} up / `
        + `${canary.canary_down} down vs live ${canary.live_up} / ${canary.live_down}: `
        + canary.verdict);
    }
    if (status.round) fact("Next round", "after the one running now");
    else if (status.next_trigger) {
      facts.push(el("dt", {}, "Next round"), el("dd", { id: "next-trigger",
        "data-reason": status.next_trigger.reason }, nextTrigger(status.next_trigger,
        reading.age_s || 0)));
    }
  }
  $("learner").replaceChildren(...facts);
  if ($("ops").hidden) return;
  const timings = Object.entries((status.last_round || {}).timings || {})
    .map(([name, seconds]) => [name.replace(/_s$/, ""), seconds]);
  drawBars($("chart-round"), timings, { format: (v) => `${v.toFixed(1)}s` });
  showFeedbackToLive(status.recent_rounds || []);
}

// What starts the learner's next round (learner/triggers.py), in words; `age` is how
// old the reading is, so the countdown does not depend on this browser's clock.
function nextTrigger(t, age) {
  const pause = `${t.settle_needed} after a ${t.settle_s} s pause`;
  if (t.reason === "waiting_for_feedback") {
    return `On new feedback: ${t.needed} event(s) start one at once, ${pause}`;
  }
  const left = Math.max(0, (t.in_s || 0) - age);
  const when = left === 0 ? "Now" : `In ${Math.round(left)} s`;
  if (t.reason === "burst") return `${when}: a burst of ${t.backlog} event(s) (≥ ${t.needed})`;
  if (t.reason === "settle") {
    return `${when}: the pause after ${t.backlog} event(s) (${pause}; ${t.needed} start one at once)`;
  }
  const deferred = t.deferred ? `, ${t.deferred} of them deferred until new feedback comes` : "";
  return `${when}: the max interval (${t.max_interval_s} s since the last round) with `
    + `${t.backlog} event(s) waiting${deferred}`;
}

// Each recent round whose version went live: seconds from its newest feedback event to
// live (learner/round_log.py); the legend also lists the rounds still waiting.
function showFeedbackToLive(rounds) {
  const made = rounds.filter((r) => r.tenant === live.tenant && r.version);
  const done = made.filter((r) => r.feedback_to_live_s !== null && r.feedback_to_live_s !== undefined);
  const seconds = (v) => (v < 100 ? `${v.toFixed(1)} s` : `${Math.round(v)} s`);
  drawBars($("chart-feedback-live"), done.map((r) => [short(r.version).slice(0, 6),
    r.feedback_to_live_s]), { format: seconds });
  const items = made.slice(-8).map((r) => el("li", { "data-version": r.version },
    `${short(r.version)}: ${r.feedback_to_live_s !== null && r.feedback_to_live_s !== undefined
      ? seconds(r.feedback_to_live_s) : r.never_live ? `never live (${r.never_live})`
        : "not live yet"}`));
  $("legend-feedback-live").replaceChildren(...(items.length ? items
    : [el("li", { class: "muted" }, "no version made yet")]));
}
