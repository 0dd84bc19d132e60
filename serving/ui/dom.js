// Small DOM helpers: elements are built with textContent only (never innerHTML), so
// answers, corrections and the API's messages cannot inject markup.

export const $ = (id) => document.getElementById(id);

// el("button", { class: "up", "aria-label": "Thumbs up", onclick: f }, "text", child)
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function short(id) {
  return id ? String(id).slice(0, 12) : "–";
}

// A version id shown short, the whole id in its title (and for screen readers).
export function versionCode(id) {
  if (!id) return el("span", { class: "muted" }, "none");
  return el("code", { title: id, "aria-label": `version ${id}` }, short(id));
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

export function setText(node, text, kind = "") {
  node.textContent = text || "";
  node.dataset.kind = kind;
}
