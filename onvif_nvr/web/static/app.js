// The single page: a hash router over page modules, the nav bar, login and logout.
//
// A page module exports `async function render(root, ctx)`, ctx = {api, params, navigate,
// session, query}; it may return a cleanup function, called before the next page renders.

import { api, ApiError, login, logout, setUnauthorizedHandler, whoami } from "./api.js";
import { el, clear, errorBox } from "./dom.js";

const LEVELS = { User: 1, Operator: 2, Administrator: 3 };

const ROUTES = {
  login: { load: null, title: "Log in", public: true },
  live: { load: () => import("./live.js"), title: "Live" },
  timeline: { load: () => import("./timeline.js"), title: "Timeline", placeholder: true },
  cameras: { load: () => import("./cameras.js"), title: "Cameras" },
  users: { load: () => import("./users.js"), title: "Users" },
  system: { load: () => import("./system.js"), title: "System" },
};

const state = { session: null, cleanup: null, seq: 0, after: "#/live" };
const main = document.getElementById("main");

/** The level rank of a session ("User" 1 .. "Administrator" 3). */
export function rank(session) {
  return (session && LEVELS[session.level]) || 0;
}

/** Go to a hash route ("#/cameras" or "cameras"). */
export function navigate(to) {
  const hash = to.startsWith("#") ? to : `#/${to.replace(/^\//, "")}`;
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parse(hash) {
  const [path, search = ""] = hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "live", params: parts.slice(1), query: new URLSearchParams(search) };
}

async function route() {
  const seq = ++state.seq;
  const { name, params, query } = parse(location.hash);
  const spec = ROUTES[name];
  if (state.cleanup) {
    const fn = state.cleanup;
    state.cleanup = null;
    try {
      fn();
    } catch (err) {
      console.error("page cleanup failed", err);
    }
  }
  if (!spec) {
    show(el("section", { class: "page" }, el("h1", {}, "Not found"),
      el("p", { class: "empty" }, `There is no page "${name}". `, el("a", { href: "#/live" }, "Go to the live wall"))));
    return;
  }
  if (!spec.public && !state.session) {
    state.after = location.hash || "#/live";
    location.replace("#/login");
    return;
  }
  if (name === "login") {
    if (state.session) return navigate(state.after || "#/live");
    renderLogin();
    return;
  }
  document.title = `${spec.title} · onvif-nvr`;
  markNav(name);
  const root = el("section", { class: `page page-${name}` });
  show(root);
  let mod;
  try {
    mod = await spec.load();
  } catch (err) {
    if (seq !== state.seq) return;
    if (spec.placeholder) {
      clear(root).append(el("h1", {}, spec.title),
        el("p", { class: "empty" }, "The timeline page is not installed on this box yet."),
        el("p", {}, el("a", { href: "#/live" }, "Back to the live wall")));
    } else {
      clear(root).append(errorBox(`The ${spec.title} page failed to load: ${err.message}`));
    }
    return;
  }
  if (seq !== state.seq) return;
  const ctx = { api, params, query, navigate, session: state.session, rank: rank(state.session) };
  try {
    const cleanup = await mod.render(root, ctx);
    if (seq !== state.seq) {
      if (typeof cleanup === "function") cleanup();
      return;
    }
    state.cleanup = typeof cleanup === "function" ? cleanup : null;
  } catch (err) {
    if (seq !== state.seq) return;
    if (err instanceof ApiError && err.status === 401) return; // the login page is on its way
    console.error(err);
    root.append(errorBox(err.message || String(err)));
  }
}

function show(node) {
  clear(main).append(node);
  main.focus({ preventScroll: true });
}

function markNav(name) {
  for (const a of document.querySelectorAll("#nav a[data-route]")) {
    a.classList.toggle("active", a.dataset.route === name);
    if (a.dataset.route === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  closeMenu();
}

function renderChrome() {
  const bar = document.getElementById("bar");
  bar.hidden = !state.session;
  if (!state.session) return;
  document.getElementById("who").textContent = `${state.session.username} (${state.session.level})`;
  for (const a of document.querySelectorAll("#nav [data-min-level]")) {
    a.hidden = rank(state.session) < LEVELS[a.dataset.minLevel];
  }
}

function renderLogin() {
  document.title = "Log in · onvif-nvr";
  renderChrome();
  const message = el("p", { class: "error", role: "alert", id: "login-error", hidden: true });
  const user = el("input", { name: "username", id: "login-username", autocomplete: "username", required: true, autofocus: true });
  const pass = el("input", { name: "password", id: "login-password", type: "password", autocomplete: "current-password" });
  const button = el("button", { type: "submit", class: "primary" }, "Log in");
  const form = el("form", { class: "login card", id: "login-form" },
    el("h1", {}, "onvif-nvr"),
    el("p", { class: "muted" }, "Log in with a user of this box (the same users as ONVIF)."),
    el("label", { for: "login-username" }, "Username"), user,
    el("label", { for: "login-password" }, "Password"), pass,
    message, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    message.hidden = true;
    button.disabled = true;
    try {
      state.session = await login(user.value, pass.value);
      renderChrome();
      navigate(state.after && state.after !== "#/login" ? state.after : "#/live");
    } catch (err) {
      message.textContent = err.status === 401 ? "Wrong username or password." : err.message;
      message.hidden = false;
      pass.select();
    } finally {
      button.disabled = false;
    }
  });
  show(el("section", { class: "page page-login" }, form));
  user.focus();
}

function closeMenu() {
  document.getElementById("nav").classList.remove("open");
  document.getElementById("menu-toggle").setAttribute("aria-expanded", "false");
}

async function start() {
  setUnauthorizedHandler(() => {
    if (!state.session) return;
    state.session = null;
    renderChrome();
    if (!location.hash.startsWith("#/login")) {
      state.after = location.hash;
      location.replace("#/login");
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    try {
      await logout();
    } catch (err) {
      console.warn("logout", err);
    }
    state.session = null;
    state.after = "#/live";
    renderChrome();
    navigate("#/login");
  });
  document.getElementById("menu-toggle").addEventListener("click", () => {
    const nav = document.getElementById("nav");
    const open = nav.classList.toggle("open");
    document.getElementById("menu-toggle").setAttribute("aria-expanded", String(open));
  });
  window.addEventListener("hashchange", route);
  try {
    state.session = await whoami();
  } catch (err) {
    clear(main).append(errorBox(`The box did not answer: ${err.message}`));
    return;
  }
  renderChrome();
  route();
}

start();
