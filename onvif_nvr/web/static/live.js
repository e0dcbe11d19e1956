// The live wall: 1, 4, 9 or 16 cameras at once, each playing over WebRTC (MSE fallback),
// with name, state, bitrate and frame rate; a click opens the camera's timeline.

import { el, clear, errorBox, formatBitrate, formatFps } from "./dom.js";
import { LivePlayer } from "./player.js";

const LAYOUTS = [1, 4, 9, 16];
const LAYOUT_KEY = "nvr.live.layout";
const TRANSPORT_KEY = "nvr.live.transport";
const REFRESH_MS = 3000;

function storedLayout() {
  const n = Number(localStorage.getItem(LAYOUT_KEY));
  return LAYOUTS.includes(n) ? n : 4;
}

/** "mse", "webrtc" or "auto": the page URL's ?transport= (tests), else the stored choice. */
function transportChoice(ctx) {
  const forced = new URLSearchParams(location.search).get("transport") || ctx.query.get("transport");
  if (forced === "mse" || forced === "webrtc" || forced === "auto") return { mode: forced, forced: true };
  const stored = localStorage.getItem(TRANSPORT_KEY);
  return { mode: stored === "mse" || stored === "webrtc" ? stored : "auto", forced: false };
}

function online(camera) {
  return camera.stats.state === "Connected";
}

function offlineText(camera) {
  if (camera.mode === "NeverConnect") return "Camera disabled (never connects)";
  const why = camera.stats.last_error ? `: ${camera.stats.last_error}` : "";
  const state = camera.stats.state === "Connecting" ? "Connecting to the camera" : "Camera offline";
  return `${state}${why}`;
}

class Tile {
  constructor(camera, mode, navigate) {
    this.camera = camera;
    this.mode = mode;
    this.player = null;
    this.video = el("video", { muted: true, autoplay: true, playsinline: true, "aria-label": `Live video of ${camera.name}` });
    this.video.muted = true; // the attribute alone does not mute for autoplay
    this.name = el("span", { class: "name" }, camera.name);
    this.stats = el("span", { class: "stats" });
    this.badge = el("span", { class: "badge state" });
    this.rec = el("span", { class: "badge bad rec", title: "Recording" }, "REC");
    this.overlay = el("div", { class: "overlay" });
    this.transport = el("span", { class: "transport" });
    this.node = el("div", {
      class: "tile",
      role: "link",
      tabindex: "0",
      "data-camera": camera.token,
      title: `${camera.name}: open the timeline`,
      onclick: () => navigate(`#/timeline/${encodeURIComponent(camera.token)}`),
      onkeydown: (e) => {
        if (e.key === "Enter") navigate(`#/timeline/${encodeURIComponent(camera.token)}`);
      },
    }, this.video, el("div", { class: "caption" }, this.name, this.badge, this.rec, this.stats), this.overlay, this.transport);
    this.update(camera);
  }

  update(camera) {
    this.camera = camera;
    this.name.textContent = camera.name;
    const s = camera.stats;
    this.stats.textContent = online(camera) ? `${formatBitrate(s.bitrate_bps)} · ${formatFps(s.fps)}` : "";
    this.badge.textContent = s.state;
    this.badge.className = `badge state ${online(camera) ? "ok" : "warn"}`;
    this.rec.hidden = !s.recording;
    if (online(camera)) {
      if (!this.player) this.play();
    } else {
      this.stopPlayer();
      this.setOverlay(offlineText(camera), "bad");
      this.node.dataset.state = "offline";
    }
  }

  play() {
    this.setOverlay("Connecting…");
    this.player = new LivePlayer(this.video, this.camera.token, {
      mode: this.mode,
      onStatus: ({ state, transport, message }) => {
        this.node.dataset.state = state;
        this.node.dataset.transport = transport;
        this.transport.textContent = transport === "webrtc" ? "WebRTC" : "MSE";
        if (state === "playing") this.setOverlay(null);
        else if (state === "connecting") this.setOverlay(`Connecting (${transport === "webrtc" ? "WebRTC" : "MSE"})…`);
        else this.setOverlay(`Live video failed: ${message}. Retrying…`, "bad");
      },
    });
    this.player.start();
  }

  stopPlayer() {
    if (this.player) {
      this.player.stop();
      this.player = null;
    }
  }

  setOverlay(text, kind = "") {
    this.overlay.hidden = !text;
    this.overlay.className = `overlay ${kind}`;
    this.overlay.textContent = text || "";
  }
}

export async function render(root, ctx) {
  let layout = storedLayout();
  let offset = 0;
  let cameras = [];
  let tiles = new Map();
  let timer = null;
  let stopped = false;
  const choice = transportChoice(ctx);

  const layoutButtons = LAYOUTS.map((n) =>
    el("button", { type: "button", "data-layout": n, "aria-pressed": String(n === layout), title: `${n} per screen`, onclick: () => setLayout(n) }, String(n)));
  const transportSelect = el("select", { id: "live-transport", "aria-label": "Live transport", disabled: choice.forced },
    el("option", { value: "auto" }, "Auto (WebRTC, MSE fallback)"),
    el("option", { value: "webrtc" }, "WebRTC only"),
    el("option", { value: "mse" }, "MSE only"));
  transportSelect.value = choice.mode;
  transportSelect.addEventListener("change", () => {
    localStorage.setItem(TRANSPORT_KEY, transportSelect.value);
    choice.mode = transportSelect.value;
    rebuild(true);
  });
  const pager = el("span", { class: "pager" });
  const message = el("div", { id: "live-message" });
  const wall = el("div", { class: `wall n${layout}`, id: "wall" });
  root.append(
    el("div", { class: "toolbar" },
      el("h1", {}, "Live"),
      el("span", { class: "segmented", role: "group", "aria-label": "Cameras per screen" }, layoutButtons),
      el("span", { class: "transport-pick" }, transportSelect),
      pager),
    message, wall);

  function setLayout(n) {
    layout = n;
    localStorage.setItem(LAYOUT_KEY, String(n));
    for (const b of layoutButtons) b.setAttribute("aria-pressed", String(Number(b.dataset.layout) === n));
    offset = Math.floor(offset / n) * n;
    rebuild(false);
  }

  function rebuild(restart) {
    const shown = cameras.slice(offset, offset + layout);
    const keep = new Map();
    for (const camera of shown) {
      const tile = tiles.get(camera.token);
      if (tile && !restart) keep.set(camera.token, tile);
    }
    for (const [token, tile] of tiles) if (!keep.has(token)) tile.stopPlayer();
    tiles = new Map();
    wall.className = `wall n${layout}`;
    clear(wall);
    for (const camera of shown) {
      const tile = keep.get(camera.token) || new Tile(camera, choice.mode, ctx.navigate);
      tile.update(camera);
      tiles.set(camera.token, tile);
      wall.append(tile.node);
    }
    // Empty places keep the grid's shape (the layout the operator chose).
    for (let i = shown.length; i < layout && layout > 1; i++) {
      wall.append(el("div", { class: "tile empty-slot", "aria-hidden": "true" }));
    }
    renderPager();
  }

  function renderPager() {
    clear(pager);
    if (cameras.length <= layout) return;
    const last = Math.min(cameras.length, offset + layout);
    pager.append(
      el("button", { type: "button", "aria-label": "Previous cameras", disabled: offset === 0, onclick: () => { offset = Math.max(0, offset - layout); rebuild(false); } }, "‹"),
      el("span", { class: "muted" }, ` ${offset + 1}–${last} of ${cameras.length} `),
      el("button", { type: "button", "aria-label": "Next cameras", disabled: last >= cameras.length, onclick: () => { offset += layout; rebuild(false); } }, "›"));
  }

  async function refresh() {
    let list;
    try {
      list = (await ctx.api("cameras")).cameras;
    } catch (err) {
      if (stopped || err.status === 401) return;
      clear(message).append(errorBox(`Could not load the cameras: ${err.message}`));
      return;
    }
    if (stopped) return;
    clear(message);
    const changed = list.length !== cameras.length || list.some((c, i) => c.token !== cameras[i].token);
    cameras = list;
    if (!cameras.length) {
      for (const tile of tiles.values()) tile.stopPlayer();
      tiles = new Map();
      clear(wall);
      clear(pager);
      message.append(el("div", { class: "empty" },
        el("p", {}, "No cameras yet."),
        ctx.rank >= 2
          ? el("p", {}, el("a", { href: "#/cameras" }, "Add a camera"), " by its RTSP URL or from the discovered devices.")
          : el("p", {}, "An Operator or Administrator can add cameras.")));
      return;
    }
    if (offset >= cameras.length) offset = Math.floor((cameras.length - 1) / layout) * layout;
    if (changed) rebuild(false);
    else for (const camera of cameras) tiles.get(camera.token)?.update(camera);
  }

  async function loop() {
    await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  }
  // Closing the tab ends the WebRTC sessions at once rather than at the box's timeout.
  const onPageHide = () => {
    for (const tile of tiles.values()) tile.stopPlayer();
  };
  window.addEventListener("pagehide", onPageHide);
  await loop();

  return () => {
    stopped = true;
    clearTimeout(timer);
    window.removeEventListener("pagehide", onPageHide);
    for (const tile of tiles.values()) tile.stopPlayer();
  };
}
