// The chat view: pick a model (a tenant, an alias or a version), stream answers, and
// rate each one (thumbs, or a better answer), as the user named in the settings.

import { ApiError, call, streamChat } from "./api.js";
import { $, el, setText, short } from "./dom.js";

const USER_KEY = "loraloop.user";
const MODEL_KEY = "loraloop.model";
const KEY_KEY = "loraloop.userKey"; // sessionStorage: gone with the tab
const state = { messages: [], stopper: null, turns: 0 };

function settings() {
  const body = {
    model: $("model").value,
    stream: true,
    stream_options: { include_usage: true },
  };
  const maxTokens = parseInt($("max-tokens").value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const temperature = $("temperature").value.trim();
  if (temperature !== "") body.temperature = Number(temperature);
  const user = $("user").value.trim();
  if (user) body.user = user;
  const strategy = $("strategy").value;
  if (strategy) body.loraloop = { strategy };
  const samples = parseInt($("samples").value, 10);
  if ((strategy === "best_of_n" || strategy === "adaptive") && samples > 0) {
    body.loraloop.n = samples;
  }
  if ($("effort").value) body.reasoning_effort = $("effort").value;
  return body;
}

function userKey() {
  return $("user-key").value.trim() || null;
}

export async function loadModels() {
  const select = $("model");
  const wanted = select.value || localStorage.getItem(MODEL_KEY);
  try {
    const { data } = await call("/v1/models");
    const names = data.data.map((m) => m.id);
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
    const tenants = names.filter((n) => !n.includes("@") && n !== "base");
    select.value = names.includes(wanted) ? wanted : (tenants[0] || names[0] || "");
    setText($("chat-error"), "");
    return names;
  } catch (err) {
    setText($("chat-error"), `Could not list the models: ${err.describe()}`, "error");
    return [];
  }
}

function metaLine(turn) {
  const meta = turn.querySelector(".meta");
  const d = turn.dataset;
  const parts = [
    el("span", { class: "version" }, "version ",
      el("code", { title: d.version || "", "aria-label": `version ${d.version}` },
        d.version === "base" ? "base" : short(d.version))),
    el("span", { class: "strategy" }, `strategy ${d.strategy || "single"}`),
  ];
  if (d.handedOff) {
    parts.push(el("span", { class: "handoff" }, d.handedOff === "true"
      ? `handed off${d.upstream ? " to " + d.upstream : ""}` : "answered locally"));
  }
  if (d.compute) parts.push(el("span", { class: "compute" }, `${d.compute} compute tokens`));
  if (d.samples && d.samples !== "1") parts.push(el("span", {}, `${d.samples} samples`));
  meta.replaceChildren(...parts);
}

function ratingControls(turn) {
  const status = el("p", { class: "feedback-status", role: "status" });
  const id = `fix-${++state.turns}`;
  const text = el("textarea", { id, rows: 3, required: true });
  const form = el("form", { class: "correction", hidden: true },
    el("label", { for: id }, "A better answer"), text,
    el("div", { class: "row" },
      el("button", { type: "submit", class: "primary" }, "Send correction"),
      el("button", { type: "button", onclick: () => toggle(false) }, "Cancel")));
  const suggest = el("button", { type: "button", class: "suggest", "aria-expanded": "false",
    "aria-controls": id, onclick: () => toggle(form.hidden) }, "Suggest a better answer");
  function toggle(open) {
    form.hidden = !open;
    suggest.setAttribute("aria-expanded", String(open));
    if (open) text.focus();
  }
  const up = el("button", { type: "button", class: "up", "aria-pressed": "false",
    onclick: () => rate(turn, "up", null, status) }, "Thumbs up");
  const down = el("button", { type: "button", class: "down", "aria-pressed": "false",
    onclick: () => rate(turn, "down", null, status) }, "Thumbs down");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (await rate(turn, "down", text.value.trim(), status)) toggle(false);
  });
  return [el("div", { class: "actions", role: "group", "aria-label": "Rate this answer" },
    up, down, suggest), form, status];
}

// POST /v1/feedback for the answer in `turn`; true when it was recorded.
async function rate(turn, rating, correction, status) {
  const buttons = turn.querySelectorAll(".actions button, .correction button");
  buttons.forEach((b) => { b.disabled = true; });
  setText(status, "Sending…");
  const body = { interaction_id: turn.dataset.interaction, rating };
  if (correction) body.correction = correction;
  const user = $("user").value.trim();
  if (user) body.user = user;
  try {
    const { data } = await call("/v1/feedback", { method: "POST", body, token: userKey(),
      headers: { "Idempotency-Key": crypto.randomUUID() } });
    turn.querySelector(".up").setAttribute("aria-pressed", String(rating === "up"));
    turn.querySelector(".down").setAttribute("aria-pressed", String(rating === "down"));
    setText(status, correction ? `Correction recorded (${data.id}).`
      : `Thanks: thumbs ${rating} recorded (${data.id}).`, "ok");
    turn.dataset.feedback = rating + (correction ? "+correction" : "");
    return true;
  } catch (err) {
    setText(status, `Feedback not recorded: ${err.describe()}`, "error");
    return false;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || state.stopper) return;
  const body = settings();
  if (!body.model) {
    setText($("chat-error"), "Pick a model first (the list comes from /v1/models).", "error");
    return;
  }
  localStorage.setItem(MODEL_KEY, body.model);
  setText($("chat-error"), "");
  state.messages.push({ role: "user", content: prompt });
  body.messages = state.messages.slice();
  $("transcript").append(el("li", { class: "turn user" }, el("p", { class: "text" }, prompt)));
  $("prompt").value = "";
  $("prompt").focus(); // Send is disabled while the answer streams: keep focus in reach
  const text = el("p", { class: "text" });
  const turn = el("li", { class: "turn assistant", "aria-busy": "true", "data-state": "waiting" },
    el("div", { class: "meta" }, "waiting for the model…"), text);
  $("transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  const stopper = new AbortController();
  state.stopper = stopper;
  $("stop").disabled = false;
  $("send").disabled = true;
  let chunks = 0;
  try {
    await streamChat(body, {
      token: userKey(),
      signal: stopper.signal,
      onOpen(headers) {
        turn.dataset.version = headers.get("X-Adapter-Version") || "";
        turn.dataset.strategy = headers.get("X-Loraloop-Strategy") || "single";
        turn.dataset.state = "streaming";
        metaLine(turn);
      },
      onEvent(chunk) {
        if (chunk.id) turn.dataset.interaction = chunk.id;
        for (const choice of chunk.choices || []) {
          if (choice.index === 0 && choice.delta && choice.delta.content) {
            text.append(choice.delta.content);
            turn.dataset.chunks = String(++chunks);
          }
        }
        if (chunk.loraloop) {
          const info = chunk.loraloop;
          Object.assign(turn.dataset, { strategy: info.strategy,
            handedOff: String(Boolean(info.handed_off)), upstream: info.upstream_model || "",
            compute: String(info.compute_tokens), samples: String(info.samples) });
          metaLine(turn);
        }
        if (chunk.usage && !turn.dataset.compute) {
          turn.dataset.tokens = String(chunk.usage.completion_tokens);
        }
      },
    });
    turn.dataset.state = "done";
    state.messages.push({ role: "assistant", content: text.textContent });
    turn.append(...ratingControls(turn));
  } catch (err) {
    turn.dataset.state = "error";
    state.messages.pop(); // the question was not answered: not part of the conversation
    const message = err instanceof ApiError ? err.describe() : String(err);
    turn.append(el("p", { class: "error", role: "alert" }, `No answer: ${message}`));
    if (text.textContent && turn.dataset.interaction) turn.append(...ratingControls(turn));
  } finally {
    turn.setAttribute("aria-busy", "false");
    state.stopper = null;
    $("stop").disabled = true;
    $("send").disabled = false;
  }
}

export function initChat() {
  $("user").value = localStorage.getItem(USER_KEY) || "";
  $("user-key").value = sessionStorage.getItem(KEY_KEY) || "";
  $("user").addEventListener("change", () => localStorage.setItem(USER_KEY, $("user").value));
  $("user-key").addEventListener("change",
    () => sessionStorage.setItem(KEY_KEY, $("user-key").value));
  $("chat-settings").addEventListener("submit", (event) => event.preventDefault());
  $("ask").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask").requestSubmit();
  });
  $("stop").addEventListener("click", () => state.stopper && state.stopper.abort());
  $("new-chat").addEventListener("click", () => {
    state.messages = [];
    $("transcript").replaceChildren();
    $("prompt").focus();
  });
  loadModels();
}
