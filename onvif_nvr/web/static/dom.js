// Small DOM helpers shared by the pages (no framework, no innerHTML of data).

/**
 * Create an element: attributes (class, for, hidden, data-*, on* handlers as functions)
 * and children (nodes or strings; null/false skipped).
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

/** Remove every child of `node`; returns it. */
export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A visible error message block. */
export function errorBox(text) {
  return el("p", { class: "error", role: "alert" }, text);
}

/** "12.3 Mbit/s" from bits per second. */
export function formatBitrate(bps) {
  if (bps === null || bps === undefined) return "–";
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(bps >= 1e7 ? 0 : 1)} Mbit/s`;
  if (bps >= 1e3) return `${Math.round(bps / 1e3)} kbit/s`;
  return `${bps} bit/s`;
}

/** "25 fps" or "–". */
export function formatFps(fps) {
  return fps ? `${fps >= 10 ? Math.round(fps) : fps.toFixed(1)} fps` : "–";
}

/** "1.2 GB" from bytes. */
export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/** "3 d 4 h", "5 min 2 s" from seconds. */
export function formatDuration(s) {
  if (s === null || s === undefined) return "–";
  s = Math.floor(s);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** Local date and time of a Unix-milliseconds instant. */
export function formatTime(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toLocaleString();
}

/** Ask for confirmation in a <dialog>; resolves true or false. */
export function confirmDialog(text, action = "Remove") {
  return new Promise((resolve) => {
    const dialog = el("dialog", { class: "confirm" },
      el("p", {}, text),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "danger", value: "yes", onclick: () => dialog.close("yes") }, action),
        el("button", { type: "button", onclick: () => dialog.close("no") }, "Cancel")));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
