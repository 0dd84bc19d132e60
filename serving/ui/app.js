// The page: two views (chat and ops) as ARIA tabs, and the API's health in the header.

import { call } from "./api.js";
import { initChat } from "./chat.js";
import { $, setText } from "./dom.js";
import { hideOps, initOps, showOps } from "./ops.js";

const HEALTH_EVERY_MS = 15000;
const TABS = ["chat", "ops"];

function select(name, { focus = false } = {}) {
  for (const other of TABS) {
    const tab = $(`tab-${other}`);
    const selected = other === name;
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(other).hidden = !selected;
    if (selected && focus) tab.focus();
  }
  const hash = name === "chat" ? "" : `#${name}`; // a link to the view, without a scroll
  if (window.location.hash !== hash) {
    history.replaceState(null, "", hash || window.location.pathname);
  }
  if (name === "ops") showOps();
  else hideOps();
}

function initTabs() {
  for (const name of TABS) {
    const tab = $(`tab-${name}`);
    tab.addEventListener("click", () => select(name));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (!step) return;
      event.preventDefault();
      const next = TABS[(TABS.indexOf(name) + step + TABS.length) % TABS.length];
      select(next, { focus: true });
    });
  }
}

async function checkHealth() {
  try {
    await call("/healthz", { timeoutMs: 5000 });
    setText($("health"), "API up", "ok");
  } catch (err) {
    setText($("health"), err.status === 0 ? err.message : `API unhealthy: ${err.describe()}`,
      "error");
  }
  setTimeout(checkHealth, HEALTH_EVERY_MS);
}

initTabs();
initChat();
initOps();
select(window.location.hash === "#ops" ? "ops" : "chat");
checkHealth();
