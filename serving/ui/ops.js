// The ops view: a tenant's versions and aliases from the admin API, the actions on
// them (each confirmed, and sent with the live version this view showed, so a change
// made elsewhere in the meantime is refused with a 409 instead of being overwritten),
// and the audit trail. Needs the admin token, kept in this tab's sessionStorage.

import { call } from "./api.js";
import { $, el, setText, short, versionCode, when } from "./dom.js";
import { startLive, stopLive } from "./live.js";

const TOKEN_KEY = "loraloop.adminToken";
const TENANT_KEY = "loraloop.opsTenant";
const view = { live: null, canary: null, fraction: null, pinned: false };

const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const tenant = () => $("ops-tenant").value;
const admin = (path, options = {}) => call(path, { ...options, token: token() });
const quoted = (s) => encodeURIComponent(s);

function showTokenState() {
  setText($("admin-state"), token() ? "Token set for this tab."
    : "Enter the admin token (LORALOOP_ADMIN_TOKEN) to see and change the registry.");
}

async function loadTenants() {
  try {
    const { data } = await call("/v1/models");
    const tenants = data.data.map((m) => m.id).filter((n) => !n.includes("@") && n !== "base");
    const wanted = tenant() || localStorage.getItem(TENANT_KEY);
    $("ops-tenant").replaceChildren(...tenants.map((t) => el("option", { value: t }, t)));
    if (tenants.includes(wanted)) $("ops-tenant").value = wanted;
  } catch (err) {
    setText($("ops-message"), `Could not list the tenants: ${err.describe()}`, "error");
  }
}

// Read the tenant's aliases, versions and audit trail again (the view actions act on).
export async function refresh({ keepError = false } = {}) {
  showTokenState();
  if (!keepError) setText($("ops-message"), "");
  if (!tenant()) await loadTenants();
  if (!token() || !tenant()) return;
  localStorage.setItem(TENANT_KEY, tenant());
  startLive(tenant(), token());
  const t = quoted(tenant());
  const [aliases, versions, audit] = await Promise.allSettled([
    admin(`/admin/tenants/${t}/aliases`),
    admin(`/admin/adapters?tenant=${t}&limit=100`),
    admin(`/admin/audit?tenant=${t}&limit=50`),
  ]);
  const failed = [aliases, versions, audit].find((r) => r.status === "rejected");
  if (failed) {
    const problem = failed.reason.status === 404 && !failed.reason.code
      ? "This server has no admin API: it is served with a registry (loraloop up serves one)."
      : `Could not read the registry: ${failed.reason.describe()}`;
    const shown = $("ops-message").textContent;
    setText($("ops-message"), keepError && shown ? `${shown} — ${problem}` : problem, "error");
  }
  if (aliases.status === "fulfilled") showAliases(aliases.value.data);
  if (versions.status === "fulfilled") showVersions(versions.value.data);
  if (audit.status === "fulfilled") showAudit(audit.value.data);
  setText($("ops-as-of"), `as of ${new Date().toLocaleTimeString()}`);
}

function showAliases(aliases) {
  const live = aliases.find((a) => a.name === "live");
  const canary = aliases.find((a) => a.name === "canary");
  Object.assign(view, { live: live ? live.version_id : null,
    canary: canary ? canary.version_id : null, fraction: canary ? canary.fraction : null,
    pinned: Boolean(live && live.pinned) });
  const facts = [el("dt", {}, "Live"), el("dd", { id: "alias-live", "data-version": view.live || "" },
    versionCode(view.live), live ? ` revision ${live.revision}${live.pinned ? ", pinned" : ""}`
      + ` (by ${live.updated_by})` : "")];
  facts.push(el("dt", {}, "Canary"), el("dd", { id: "alias-canary",
    "data-version": view.canary || "" }, versionCode(view.canary),
  canary ? ` on ${Math.round(canary.fraction * 1000) / 10}% of traffic` : ""));
  $("aliases").replaceChildren(...facts);
  $("rollback").disabled = !view.live;
  $("stop-canary").disabled = !view.canary;
}

function metricsCell(metrics) {
  const keys = Object.keys(metrics || {});
  if (!keys.length) return el("span", { class: "muted" }, "–");
  const headline = metrics.gate ? String(metrics.gate).slice(0, 60) : `${keys.length} value${keys.length === 1 ? "" : "s"}`;
  return el("details", {}, el("summary", {}, headline),
    el("pre", {}, JSON.stringify(metrics, null, 1)));
}

function showVersions(versions) {
  const rows = versions.map((v) => {
    const marks = [];
    if (v.id === view.live) marks.push(view.pinned ? "live, pinned" : "live");
    if (v.id === view.canary) marks.push(`canary ${Math.round(view.fraction * 100)}%`);
    const isLive = v.id === view.live;
    const button = (kind, label, disabled) => el("button", { type: "button", class: kind,
      disabled, "aria-label": `${label} ${short(v.id)}`, onclick: () => act(kind, v.id) }, label);
    return el("tr", { "data-version": v.id, "data-status": v.status },
      el("td", {}, versionCode(v.id)),
      el("td", {}, el("span", { class: `status s-${v.status}` }, v.status)),
      el("td", {}, marks.join("; ") || "–"),
      el("td", {}, versionCode(v.parent_id)),
      el("td", {}, String(v.dataset_size ?? 0)),
      el("td", {}, metricsCell(v.metrics)),
      el("td", {}, when(v.created_at)),
      el("td", { class: "actions" },
        button("promote", "Promote", isLive),
        button("canary", "Canary", isLive),
        button("pin", "Pin", isLive && view.pinned)));
  });
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "no versions yet")));
  }
  $("versions").tBodies[0].replaceChildren(...rows);
}

function showAudit(entries) {
  const rows = entries.slice().reverse().map((e) => el("tr", { "data-action": e.action },
    el("td", {}, when(e.at)), el("td", {}, e.actor), el("td", {}, e.action),
    el("td", {}, el("span", { class: e.outcome === "ok" ? "ok" : "refused" }, e.outcome)),
    el("td", {}, versionCode(e.version_id)),
    el("td", {}, `${e.from_status || short(e.from_version)} → ${e.to_status
      || short(e.to_version)}`),
    el("td", {}, [e.reason, e.detail].filter(Boolean).join(" — ") || "–")));
  $("audit").tBodies[0].replaceChildren(...rows);
}

// The confirmation dialog: resolves { reason, fraction } or null (cancelled).
function confirmed(text, { fraction = false } = {}) {
  const dialog = $("confirm");
  setText($("confirm-text"), text);
  $("confirm-fraction-label").hidden = !fraction;
  $("confirm-reason").value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"
      ? { reason: $("confirm-reason").value.trim(), fraction: Number($("confirm-fraction").value) }
      : null), { once: true });
    dialog.showModal();
  });
}

const ACTIONS = {
  promote: (v) => ({ label: "Promote", ask: `Promote ${short(v)} to live for ${tenant()}? `
    + `Live now: ${short(view.live)}.`, path: `/admin/adapters/${v}/promote`, expect: true }),
  canary: (v) => ({ label: "Canary", ask: `Send a share of ${tenant()}'s traffic to `
    + `${short(v)}?`, path: `/admin/adapters/${v}/canary`, fraction: true }),
  pin: (v) => ({ label: "Pin", ask: `Make ${short(v)} live for ${tenant()} and pin it `
    + "(promotions then need force)?", path: `/admin/adapters/${v}/pin`, expect: true }),
  rollback: () => ({ label: "Rollback", ask: `Roll ${tenant()} back from ${short(view.live)} `
    + "to its previous live version?", path: `/admin/tenants/${quoted(tenant())}/rollback`,
  expect: true }),
  "stop-canary": () => ({ label: "Stop canary", ask: `Stop ${tenant()}'s canary `
    + `${short(view.canary)}?`, path: `/admin/tenants/${quoted(tenant())}/canary`,
  method: "DELETE" }),
};

async function act(kind, version) {
  const action = ACTIONS[kind](version);
  const answer = await confirmed(action.ask, { fraction: action.fraction });
  if (!answer) return;
  const body = { reason: answer.reason || "from the web UI" };
  if (action.expect) body.expected_live = view.live; // what this view showed as live
  if (action.fraction) body.fraction = answer.fraction;
  let path = action.path;
  if (action.method === "DELETE") path += `?reason=${quoted(body.reason)}`;
  try {
    await admin(path, { method: action.method || "POST",
      body: action.method === "DELETE" ? undefined : body });
    setText($("ops-message"), `${action.label}: done.`, "ok");
    await refresh({ keepError: true });
  } catch (err) {
    setText($("ops-message"), `${action.label} refused: ${err.describe()}`, "error");
    await refresh({ keepError: true });
  }
}

export function initOps() {
  showTokenState();
  $("admin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("admin-token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    $("admin-token").value = "";
    refresh();
  });
  $("admin-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    stopLive();
    showTokenState();
  });
  $("ops-tenant").addEventListener("change", () => refresh());
  $("ops-refresh").addEventListener("click", () => refresh());
  $("rollback").addEventListener("click", () => act("rollback"));
  $("stop-canary").addEventListener("click", () => act("stop-canary"));
}

export async function showOps() {
  await refresh();
}

export function hideOps() {
  stopLive();
}
