// Timeline / playback page: one camera's recording over a day, played back in the browser with
// Media Source Extensions from the box's stored fMP4 fragments (GET .../media.mp4).
//
// Times: every variable holding a wall time is Unix milliseconds and ends in `Ms`; media time
// (HTMLMediaElement.currentTime) is seconds on the one SourceBuffer timeline, and
// wall = originMs + media * 1000 exactly (the X-Wall-Origin-Ms contract of media.mp4).

const DAY_MS = 86_400_000;
const ZOOMS = [
  { label: "Day", ms: DAY_MS },
  { label: "Hour", ms: 3_600_000 },
  { label: "10 min", ms: 600_000 },
];
const SPEEDS = [0.25, 0.5, 1, 2, 4, 8];
const CHUNK_S = 20; // media.mp4 duration_s per request
const AHEAD_S = 45; // media seconds kept buffered ahead of the play head (at 1x)
const MAX_AHEAD_S = 150;
const PAUSED_AHEAD_S = 10;
const GAP_NEAR_S = 0.15; // a play head this close to a buffered range's end jumps the gap
const GAP_STALL_MS = 400; // ... or this long without moving,
const GAP_NEAR_STALLED_S = 1.5; // ... this close to the end
const BEHIND_S = 30; // media seconds kept behind it (frame steps back stay local)
const EVENT_PAGES = 4; // event pages (keyset) per window before markers are cut off
const EVENT_LIMIT = 250;
const TICKS_MS = [
  1000, 5000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
  7_200_000, 10_800_000, 21_600_000,
];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Local midnight at or before `ms` (days follow the viewer's time zone, DST included). */
function dayStartOf(ms) {
  const d = new Date(ms);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
}

function nextDayStart(dayMs) {
  const d = new Date(dayMs);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate() + 1).getTime();
}

function prevDayStart(dayMs) {
  const d = new Date(dayMs);
  return new Date(d.getFullYear(), d.getMonth(), d.getDate() - 1).getTime();
}

function dateInputValue(dayMs) {
  const d = new Date(dayMs);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function localTime(ms, withMs = true) {
  const d = new Date(ms);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

function utcTime(ms) {
  const d = new Date(ms);
  return (
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}` +
    `.${pad(d.getUTCMilliseconds(), 3)}Z`
  );
}

/** RFC 3339 with milliseconds and Z, what the API's time parameters take. */
const rfc3339 = (ms) => new Date(ms).toISOString();

class NoData extends Error {}
class OriginTooLate extends Error {}

/**
 * One <video> fed by a MediaSource. Chunks from media.mp4 are appended to one SourceBuffer on
 * the timeline of the first chunk's origin; gaps in the recording stay gaps in media time and
 * are jumped over when the play head reaches the end of a buffered range.
 */
class Player {
  constructor(video, recording, { nextRecordedAfter, onState, onError }) {
    this.video = video;
    this.recording = recording;
    this.nextRecordedAfter = nextRecordedAfter;
    this.onState = onState;
    this.onError = onError;
    this.originMs = null;
    this.mime = null;
    this.ms = null;
    this.sb = null;
    this.objectUrl = null;
    this.nextMs = null; // wall time the next chunk starts at (X-End-Ms of the last one)
    this.exhausted = false; // nothing recorded after nextMs (yet)
    this.exhaustedAt = 0;
    this.gen = 0; // bumped by every reset: stale fetches and appends drop their results
    this.abort = null;
    this.fetching = false;
    this.queue = Promise.resolve();
    this.rate = 1;
    this.loading = false;
    // How the last seek was served: 'buffered' (currentTime only), 'window' (the buffer
    // emptied and refilled on the same timeline) or 'new' (a new MediaSource and origin).
    this.lastLoad = null;
    this.lastT = 0; // play head at the previous tick, and when it last moved (stall check)
    this.movedAt = 0;
    this.onTick = () => this.tick();
    this.timer = setInterval(this.onTick, 200);
    video.addEventListener("waiting", this.onTick);
    video.addEventListener("timeupdate", this.onTick);
    this.onVideoError = () => {
      const e = video.error;
      if (e) onError(new Error(`the browser stopped decoding: ${e.message || `code ${e.code}`}`));
    };
    video.addEventListener("error", this.onVideoError);
  }

  destroy() {
    clearInterval(this.timer);
    this.video.removeEventListener("waiting", this.onTick);
    this.video.removeEventListener("timeupdate", this.onTick);
    this.video.removeEventListener("error", this.onVideoError);
    this.gen += 1;
    if (this.abort) this.abort.abort();
    this.video.removeAttribute("src");
    this.video.load();
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
  }

  /** The wall time at the play head, or null before anything is loaded. */
  get wallMs() {
    if (this.originMs === null) return null;
    return this.originMs + this.video.currentTime * 1000;
  }

  get paused() {
    return this.video.paused;
  }

  mediaOf(wallMs) {
    return (wallMs - this.originMs) / 1000;
  }

  /** The buffered range holding media time `t`, if any. */
  bufferedAt(t) {
    const b = this.video.buffered;
    for (let i = 0; i < b.length; i += 1) {
      if (b.start(i) <= t + 1e-3 && t < b.end(i) - 1e-3) return { start: b.start(i), end: b.end(i) };
    }
    return null;
  }

  async seek(wallMs) {
    if (this.sb && this.originMs !== null && wallMs >= this.originMs) {
      const t = this.mediaOf(wallMs);
      if (this.bufferedAt(t)) {
        this.lastLoad = "buffered";
        this.video.currentTime = t;
        this.onState();
        return;
      }
      // After the origin but not buffered: same MediaSource, same timeline, fresh buffer.
      await this.restart(wallMs, false);
      return;
    }
    // First load, or before the origin (media time cannot go negative): a new MediaSource.
    await this.restart(wallMs, true);
  }

  async restart(wallMs, fresh) {
    this.gen += 1;
    const gen = this.gen;
    if (this.abort) this.abort.abort();
    this.abort = null;
    this.fetching = false;
    this.exhausted = false;
    this.loading = true;
    this.onState();
    const wasPlaying = !this.video.paused;
    try {
      let chunk;
      try {
        chunk = await this.fetchChunk(wallMs, fresh ? null : this.originMs);
      } catch (err) {
        if (err instanceof OriginTooLate) {
          // The keyframe before wallMs lies before our origin (retention cut the start of
          // the stretch): start over on a timeline of its own.
          fresh = true;
          chunk = await this.fetchChunk(wallMs, null);
        } else if (err instanceof NoData) {
          // Nothing in the window: start at the next recorded time after it, if any.
          const next = await this.nextRecordedAfter(wallMs);
          if (gen !== this.gen) return;
          if (next === null) throw new Error("nothing recorded at or after this time");
          chunk = await this.fetchChunk(next, fresh ? null : this.originMs);
          wallMs = next;
        } else {
          throw err;
        }
      }
      if (gen !== this.gen) return;
      this.lastLoad = fresh || !this.sb || chunk.mime !== this.mime ? "new" : "window";
      if (this.lastLoad === "new") {
        await this.openSource(chunk.mime, gen);
        this.originMs = chunk.originMs;
      } else if (this.video.buffered.length) {
        await this.enqueue(() => this.sb.remove(0, Infinity));
      }
      if (gen !== this.gen) return;
      await this.append(chunk.data, gen);
      this.nextMs = chunk.endMs;
      if (gen !== this.gen) return;
      this.video.currentTime = Math.max(this.mediaOf(wallMs), this.mediaOf(chunk.firstFrameMs));
      if (wasPlaying) this.play();
    } catch (err) {
      if (gen === this.gen && err.name !== "AbortError") this.onError(err);
    } finally {
      if (gen === this.gen) {
        this.loading = false;
        this.onState();
      }
    }
  }

  openSource(mime, gen) {
    if (!window.MediaSource || !MediaSource.isTypeSupported(mime)) {
      return Promise.reject(new Error(`this browser cannot play ${mime}`));
    }
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    const ms = new MediaSource();
    this.ms = ms;
    this.sb = null;
    this.mime = mime;
    this.queue = Promise.resolve();
    this.objectUrl = URL.createObjectURL(ms);
    this.video.src = this.objectUrl;
    return new Promise((resolve, reject) => {
      ms.addEventListener(
        "sourceopen",
        () => {
          if (gen !== this.gen) {
            resolve();
            return;
          }
          try {
            this.sb = ms.addSourceBuffer(mime);
            resolve();
          } catch (err) {
            reject(err);
          }
        },
        { once: true },
      );
    });
  }

  /** SourceBuffer operations run one at a time; each resolves on its updateend. */
  enqueue(op) {
    const sb = this.sb;
    const run = () =>
      new Promise((resolve, reject) => {
        if (!sb || this.ms.readyState !== "open" || sb !== this.sb) {
          resolve();
          return;
        }
        const done = () => {
          sb.removeEventListener("updateend", done);
          sb.removeEventListener("error", fail);
          resolve();
        };
        const fail = () => {
          sb.removeEventListener("updateend", done);
          sb.removeEventListener("error", fail);
          reject(new Error("the browser could not decode the recording"));
        };
        sb.addEventListener("updateend", done);
        sb.addEventListener("error", fail);
        try {
          op();
        } catch (err) {
          done();
          reject(err);
        }
      });
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  async append(data, gen) {
    try {
      await this.enqueue(() => this.sb.appendBuffer(data));
    } catch (err) {
      if (err.name !== "QuotaExceededError" || gen !== this.gen) throw err;
      // Full: drop everything behind the play head and try once more.
      const t = this.video.currentTime;
      if (t > 1) await this.enqueue(() => this.sb.remove(0, t - 1));
      await this.enqueue(() => this.sb.appendBuffer(data));
    }
  }

  async fetchChunk(startMs, originMs) {
    const q = new URLSearchParams({ start: rfc3339(startMs), duration_s: String(CHUNK_S) });
    if (originMs !== null) q.set("origin", rfc3339(originMs));
    const url = `/api/v1/recordings/${encodeURIComponent(this.recording)}/media.mp4?${q}`;
    this.abort = new AbortController();
    const r = await fetch(url, { credentials: "same-origin", signal: this.abort.signal });
    if (!r.ok) {
      let code = "";
      let message = `${r.status} ${r.statusText}`;
      try {
        const body = await r.json();
        code = body.error.code;
        message = body.error.message || message;
      } catch {
        // not the API's JSON error: keep the status line
      }
      if (r.status === 404 && code === "NoData") throw new NoData(message);
      if (r.status === 422 && originMs !== null) throw new OriginTooLate(message);
      throw new Error(`media: ${message}`);
    }
    const num = (name) => {
      const v = r.headers.get(name);
      return v === null ? null : Number(v);
    };
    const data = await r.arrayBuffer();
    return {
      data,
      mime: r.headers.get("Content-Type"),
      originMs: num("X-Wall-Origin-Ms"),
      firstFrameMs: num("X-First-Frame-Ms") ?? startMs,
      endMs: num("X-End-Ms") ?? startMs + CHUNK_S * 1000,
    };
  }

  /** Keep AHEAD_S (times the speed) buffered, drop what is far behind, jump gaps. */
  async tick() {
    if (!this.sb || this.loading) return;
    const v = this.video;
    const t = v.currentTime;
    const b = v.buffered;
    // Gap: the play head is at the end of one buffered range and a later one exists. Chromium
    // may stall a few frames before the range's end (seen at 8x: 0.18 s before it), so a
    // play head that has not moved for GAP_STALL_MS near the end counts as there too.
    const now = performance.now();
    if (t !== this.lastT || v.paused || v.seeking) {
      this.lastT = t;
      this.movedAt = now;
    }
    const stalled = !v.paused && now - this.movedAt > GAP_STALL_MS;
    if (!v.paused || v.readyState < 3) {
      for (let i = 0; i < b.length - 1; i += 1) {
        const near = stalled ? GAP_NEAR_STALLED_S : GAP_NEAR_S;
        if (t >= b.end(i) - near && t < b.start(i + 1)) {
          v.currentTime = b.start(i + 1);
          break;
        }
      }
    }
    this.onState();
    const end = b.length ? b.end(b.length - 1) : t;
    // More ahead at high speeds, but bounded: MSE buffers hold ~150 MB of video in Chromium.
    // Paused (scrubbing, stepping), one window is enough; playing fills the rest.
    const ahead = v.paused
      ? PAUSED_AHEAD_S
      : Math.min(AHEAD_S * Math.max(1, this.rate), MAX_AHEAD_S);
    const stale = this.exhausted && Date.now() - this.exhaustedAt > 5000;
    if (!this.fetching && (!this.exhausted || stale) && end - t < ahead && this.nextMs !== null) {
      this.fetchAhead();
    }
    if (!this.sb.updating && b.length && b.start(0) < t - BEHIND_S * 2) {
      this.enqueue(() => this.sb.remove(0, t - BEHIND_S)).catch(() => {});
    }
  }

  async fetchAhead() {
    const gen = this.gen;
    this.fetching = true;
    try {
      let chunk;
      try {
        chunk = await this.fetchChunk(this.nextMs, this.originMs);
      } catch (err) {
        if (!(err instanceof NoData)) throw err;
        const next = await this.nextRecordedAfter(this.nextMs + CHUNK_S * 1000);
        if (gen !== this.gen) return;
        if (next === null) {
          // The end of what is recorded so far; look again later (it may still be growing).
          this.exhausted = true;
          this.exhaustedAt = Date.now();
          return;
        }
        this.nextMs = next;
        chunk = await this.fetchChunk(next, this.originMs);
      }
      if (gen !== this.gen) return;
      if (chunk.mime !== this.mime) {
        // A codec change mid-recording; switch the buffer when the browser can.
        if (!this.sb.changeType) throw new Error("the codec changes here: seek past it");
        await this.enqueue(() => this.sb.changeType(chunk.mime));
        this.mime = chunk.mime;
      }
      await this.append(chunk.data, gen);
      if (gen !== this.gen) return;
      this.exhausted = false;
      this.nextMs = Math.max(chunk.endMs, this.nextMs + 1);
    } catch (err) {
      if (gen === this.gen && err.name !== "AbortError") this.onError(err);
    } finally {
      if (gen === this.gen) this.fetching = false;
    }
  }

  play() {
    this.video.playbackRate = this.rate;
    const p = this.video.play();
    if (p) p.catch(() => {});
  }

  pause() {
    this.video.pause();
  }

  setRate(rate) {
    this.rate = rate;
    this.video.playbackRate = rate;
  }

  /** One frame forward or back (paused); back past the buffer re-fetches from a keyframe. */
  step(direction, fps) {
    if (this.originMs === null) return;
    this.pause();
    const target = this.video.currentTime + direction / fps;
    if (target >= 0 && this.bufferedAt(target)) {
      this.video.currentTime = target;
      this.onState();
    } else {
      this.seek(this.originMs + target * 1000);
    }
  }
}

export async function render(root, ctx) {
  const { api } = ctx;
  // The shell's router passes the path parts after the page name as an array
  // (#/timeline/<camera>); the documented contract named it params.camera.
  const camera = Array.isArray(ctx.params) ? ctx.params[0] : ctx.params.camera;
  // #/timeline/<camera>?t=<RFC 3339 or Unix ms> opens at that instant.
  const startParam = ctx.query && ctx.query.get ? ctx.query.get("t") : null;
  ensureStylesheet();

  const errorBox = el("div", { class: "tl-error", role: "alert", hidden: "" });
  const title = el("h2", { class: "tl-title", text: camera });
  const liveLink = el("a", { class: "tl-live", href: "#/live", text: "Go live" });
  const dayInput = el("input", { type: "date", class: "tl-day", "aria-label": "Day" });
  const prevDay = el("button", { type: "button", class: "tl-prev-day", text: "◀ Day" });
  const nextDay = el("button", { type: "button", class: "tl-next-day", text: "Day ▶" });
  const zoomButtons = ZOOMS.map((z, i) =>
    el("button", { type: "button", class: "tl-zoom", "data-zoom": String(i), text: z.label }),
  );
  const panLeft = el("button", { type: "button", class: "tl-pan", "aria-label": "Earlier", text: "‹" });
  const panRight = el("button", { type: "button", class: "tl-pan", "aria-label": "Later", text: "›" });
  const axis = el("div", { class: "tl-axis", title: "Drag to pan" });
  const ranges = el("div", { class: "tl-ranges" });
  const events = el("div", { class: "tl-events" });
  const cursor = el("div", { class: "tl-cursor", hidden: "" });
  const hover = el("div", { class: "tl-hover", hidden: "" });
  const track = el(
    "div",
    { class: "tl-track", role: "slider", tabindex: "0", "aria-label": "Recorded time; click to seek" },
    ranges,
    events,
    cursor,
    hover,
  );
  const empty = el("div", { class: "tl-empty", hidden: "", text: "Nothing recorded on this day." });
  const hint = el("div", { class: "tl-hint", hidden: "" });
  const video = el("video", { class: "tl-video", muted: "", playsinline: "", preload: "auto" });
  video.muted = true;
  const spinner = el("div", { class: "tl-loading", hidden: "", text: "Loading…" });
  const playBtn = el("button", { type: "button", class: "tl-play", text: "Play" });
  const backBtn = el("button", { type: "button", class: "tl-step-back", title: "Previous frame (←)", text: "‹ Frame" });
  const fwdBtn = el("button", { type: "button", class: "tl-step-fwd", title: "Next frame (→)", text: "Frame ›" });
  const speed = el(
    "select",
    { class: "tl-speed", "aria-label": "Speed" },
    ...SPEEDS.map((s) => el("option", { value: String(s), text: `${s}×` })),
  );
  speed.value = "1";
  const clockLocal = el("span", { class: "tl-time-local", text: "--:--:--" });
  const clockUtc = el("span", { class: "tl-time-utc", text: "" });
  const clock = el("div", { class: "tl-time", "aria-live": "off" }, clockLocal, clockUtc);

  const page = el(
    "section",
    { class: "tl-page" },
    el("header", { class: "tl-head" }, title, liveLink),
    errorBox,
    el("div", { class: "tl-stage" }, video, spinner),
    el("div", { class: "tl-controls" }, backBtn, playBtn, fwdBtn, speed, clock),
    el(
      "div",
      { class: "tl-nav" },
      el("div", { class: "tl-days" }, prevDay, dayInput, nextDay),
      el("div", { class: "tl-zooms" }, panLeft, ...zoomButtons, panRight),
    ),
    el("div", { class: "tl-bar" }, track, axis),
    hint,
    empty,
  );
  root.replaceChildren(page);

  const state = {
    dayMs: dayStartOf(Date.now()),
    viewMs: 0,
    spanMs: DAY_MS,
    zoom: 0,
    dayRanges: [],
    recording: null,
    fps: 25,
    seekingTo: null, // wall time of a pending seek, shown until the player gets there
    lastSeekMs: null,
    loadSeq: 0,
  };

  function showError(err) {
    if (!err) {
      errorBox.hidden = true;
      errorBox.textContent = "";
      return;
    }
    errorBox.hidden = false;
    errorBox.textContent = err.message || String(err);
  }

  const dayEnd = () => nextDayStart(state.dayMs);
  const xToMs = (x, width) => state.viewMs + (x / width) * state.spanMs;
  const pct = (ms) => `${((ms - state.viewMs) / state.spanMs) * 100}%`;

  function clampView() {
    const span = Math.min(state.spanMs, dayEnd() - state.dayMs);
    state.spanMs = span;
    state.viewMs = Math.min(Math.max(state.viewMs, state.dayMs), dayEnd() - span);
  }

  // -- recording lookup -------------------------------------------------------------------
  async function findRecording() {
    const cam = await api(`/api/v1/cameras/${encodeURIComponent(camera)}`);
    title.textContent = cam.name || camera;
    if (cam.stats && cam.stats.fps) state.fps = cam.stats.fps;
    // The camera names its recording once the API links them; until then the recording whose
    // source name is the camera's name (or token), or the only recording there is.
    const direct = cam.recording || cam.recording_token || (cam.links && cam.links.recording);
    const list = (await api("/api/v1/recordings")).recordings;
    if (direct) return list.find((r) => r.token === direct) || { token: direct };
    const named = list.filter((r) => r.source_name === cam.name || r.source_name === camera);
    if (named.length) return named[0];
    if (list.length === 1) return list[0];
    throw new Error("no recording found for this camera");
  }

  // -- data -------------------------------------------------------------------------------
  async function timelineRanges(startMs, endMs, resolutionS) {
    const q = new URLSearchParams({
      start: rfc3339(startMs),
      end: rfc3339(endMs),
      resolution: String(Math.min(86400, Math.max(0.001, resolutionS))),
      recording: state.recording.token,
    });
    const tl = await api(`/api/v1/timeline?${q}`);
    const rec = tl.recordings.find((r) => r.recording === state.recording.token);
    return rec ? rec.ranges : [];
  }

  async function eventsIn(startMs, endMs) {
    const out = [];
    let cursorKey = null;
    for (let i = 0; i < EVENT_PAGES; i += 1) {
      const q = new URLSearchParams({
        recording: state.recording.token,
        start: rfc3339(startMs),
        end: rfc3339(endMs),
        limit: String(EVENT_LIMIT),
      });
      if (cursorKey) q.set("cursor", cursorKey);
      const pageOf = await api(`/api/v1/events?${q}`);
      out.push(...pageOf.events);
      cursorKey = pageOf.next_cursor;
      if (!cursorKey) break;
    }
    return { events: out, truncated: Boolean(cursorKey) };
  }

  /** The first recorded wall time after `ms` (null when nothing follows), for gaps. */
  async function nextRecordedAfter(ms) {
    const end = Math.min(ms + 7 * DAY_MS, Date.now() + 60_000);
    if (end <= ms) return null;
    const found = await timelineRanges(ms, end, 1);
    for (const [start, stop] of found) {
      if (stop > ms) return Math.max(start, ms);
    }
    return null;
  }

  async function loadDay() {
    const seq = ++state.loadSeq;
    dayInput.value = dateInputValue(state.dayMs);
    const width = Math.max(track.clientWidth, 300);
    const found = await timelineRanges(state.dayMs, dayEnd(), (dayEnd() - state.dayMs) / 1000 / width);
    if (seq !== state.loadSeq) return;
    state.dayRanges = found;
    await loadView();
    if (seq !== state.loadSeq) return;
    // After the bar is drawn, so the message and the bar never disagree.
    empty.hidden = found.length > 0;
    page.classList.toggle("tl-is-empty", found.length === 0);
  }

  async function loadView() {
    const seq = state.loadSeq;
    clampView();
    drawAxis();
    zoomButtons.forEach((b, i) => b.classList.toggle("tl-active", i === state.zoom));
    const width = Math.max(track.clientWidth, 100);
    const start = state.viewMs;
    const end = state.viewMs + state.spanMs;
    const [found, evs] = await Promise.all([
      state.zoom === 0 ? state.dayRanges : timelineRanges(start, end, state.spanMs / 1000 / width),
      eventsIn(start, end),
    ]);
    if (seq !== state.loadSeq || start !== state.viewMs) return;
    ranges.replaceChildren(
      ...found.map(([s, e]) => {
        const node = el("div", {
          class: "tl-range",
          "data-start-ms": String(s),
          "data-end-ms": String(e),
          title: `${localTime(s, false)} – ${localTime(e, false)}`,
        });
        node.style.left = pct(s);
        node.style.width = `${((e - s) / state.spanMs) * 100}%`;
        return node;
      }),
    );
    events.replaceChildren(
      ...evs.events.map((ev) => {
        const node = el("button", {
          type: "button",
          class: "tl-event",
          "data-ms": String(ev.utc_ms),
          title: `${localTime(ev.utc_ms)} ${ev.topic}${ev.operation ? ` (${ev.operation})` : ""}`,
          "aria-label": `Event ${ev.topic} at ${localTime(ev.utc_ms, false)}`,
        });
        node.style.left = pct(ev.utc_ms);
        return node;
      }),
    );
    hint.hidden = !evs.truncated;
    hint.textContent = `Showing the first ${evs.events.length} events here; zoom in to see all.`;
    updateCursor();
  }

  function reload(fn) {
    fn()
      .then(() => showError(null))
      .catch(showError);
  }

  function drawAxis() {
    const width = Math.max(axis.clientWidth, 100);
    const minGapMs = (70 / width) * state.spanMs;
    const step = TICKS_MS.find((s) => s >= minGapMs) || TICKS_MS[TICKS_MS.length - 1];
    const ticks = [];
    // Ticks on local clock boundaries (the offset of local time from UTC, whole minutes).
    const offsetMs = -new Date(state.viewMs).getTimezoneOffset() * 60_000;
    let t = Math.ceil((state.viewMs + offsetMs) / step) * step - offsetMs;
    // No label that would be cut by the bar's right edge (~40 px of text).
    const lastMs = state.viewMs + state.spanMs * (1 - 40 / width);
    for (; t <= lastMs; t += step) {
      const node = el("span", { class: "tl-tick", text: localTime(t, false).slice(0, step < 60_000 ? 8 : 5) });
      node.style.left = pct(t);
      ticks.push(node);
    }
    axis.replaceChildren(...ticks);
  }

  // -- the play head ----------------------------------------------------------------------
  function currentMs() {
    if (state.seekingTo !== null) return state.seekingTo;
    return realPlayer ? realPlayer.wallMs : null;
  }

  function updateCursor() {
    const ms = currentMs();
    if (ms === null || ms < state.viewMs || ms > state.viewMs + state.spanMs) {
      cursor.hidden = true;
    } else {
      cursor.hidden = false;
      cursor.style.left = pct(ms);
    }
  }

  function updateClock() {
    const ms = currentMs();
    if (ms === null) return;
    const rounded = Math.round(ms);
    clock.dataset.wallMs = String(rounded);
    clockLocal.textContent = `${dateInputValue(rounded)} ${localTime(rounded)}`;
    clockUtc.textContent = `${utcTime(rounded)} UTC`;
  }

  let following = true;
  function onPlayerState() {
    if (!realPlayer) return;
    if (state.seekingTo !== null && !realPlayer.loading) state.seekingTo = null;
    spinner.hidden = !realPlayer.loading;
    playBtn.textContent = video.paused ? "Play" : "Pause";
    playBtn.setAttribute("aria-pressed", String(!video.paused));
    const paused = video.paused;
    backBtn.disabled = !paused;
    fwdBtn.disabled = !paused;
    updateClock();
    const ms = currentMs();
    if (ms !== null && !video.paused && following) {
      if (ms >= dayEnd()) {
        // Played past midnight: the next day follows the play head.
        state.dayMs = dayStartOf(ms);
        state.viewMs = state.dayMs;
        reload(loadDay);
      } else if (ms > state.viewMs + state.spanMs) {
        state.viewMs = ms - state.spanMs * 0.1;
        reload(loadView);
      }
    }
    updateCursor();
  }

  let realPlayer = null;

  function seekTo(ms) {
    if (!realPlayer) return;
    showError(null);
    state.seekingTo = ms;
    state.lastSeekMs = ms;
    updateCursor();
    updateClock();
    realPlayer.seek(ms).then(onPlayerState);
  }

  // -- input ------------------------------------------------------------------------------
  let drag = null;
  track.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || e.target.classList.contains("tl-event")) return;
    drag = { id: e.pointerId };
    track.setPointerCapture(e.pointerId);
    moveHover(e);
  });
  track.addEventListener("pointermove", (e) => {
    moveHover(e);
  });
  track.addEventListener("pointerleave", () => {
    if (!drag) hover.hidden = true;
  });
  const endDrag = (e) => {
    if (!drag || drag.id !== e.pointerId) return;
    drag = null;
    hover.hidden = true;
    const rect = track.getBoundingClientRect();
    const x = Math.min(Math.max(e.clientX - rect.left, 0), rect.width);
    seekTo(Math.round(xToMs(x, rect.width)));
  };
  track.addEventListener("pointerup", endDrag);
  track.addEventListener("pointercancel", () => {
    drag = null;
    hover.hidden = true;
  });
  function moveHover(e) {
    const rect = track.getBoundingClientRect();
    const x = Math.min(Math.max(e.clientX - rect.left, 0), rect.width);
    const ms = xToMs(x, rect.width);
    hover.hidden = false;
    hover.style.left = pct(ms);
    hover.dataset.label = localTime(ms, state.spanMs <= 3_600_000);
    if (drag) {
      cursor.hidden = false;
      cursor.style.left = pct(ms);
    }
  }
  events.addEventListener("click", (e) => {
    const target = e.target.closest(".tl-event");
    if (target) seekTo(Number(target.dataset.ms));
  });

  let pan = null;
  axis.addEventListener("pointerdown", (e) => {
    pan = { id: e.pointerId, x: e.clientX, viewMs: state.viewMs };
    axis.setPointerCapture(e.pointerId);
  });
  axis.addEventListener("pointermove", (e) => {
    if (!pan || pan.id !== e.pointerId) return;
    const dx = e.clientX - pan.x;
    state.viewMs = pan.viewMs - (dx / axis.clientWidth) * state.spanMs;
    clampView();
    drawAxis();
  });
  const endPan = (e) => {
    if (!pan || pan.id !== e.pointerId) return;
    pan = null;
    following = false;
    reload(loadView);
  };
  axis.addEventListener("pointerup", endPan);
  axis.addEventListener("pointercancel", endPan);

  function panBy(fraction) {
    following = false;
    state.viewMs += state.spanMs * fraction;
    reload(loadView);
  }
  panLeft.addEventListener("click", () => panBy(-0.5));
  panRight.addEventListener("click", () => panBy(0.5));

  function setZoom(i) {
    const ms = currentMs();
    const center =
      ms !== null && ms >= state.dayMs && ms < dayEnd() ? ms : state.viewMs + state.spanMs / 2;
    state.zoom = i;
    state.spanMs = ZOOMS[i].ms;
    state.viewMs = center - state.spanMs / 2;
    following = true;
    reload(loadView);
  }
  zoomButtons.forEach((b, i) => b.addEventListener("click", () => setZoom(i)));

  function setDay(dayMs) {
    // Same time of day on the other day: stepping back and forth keeps the view in place.
    const offsetMs = state.viewMs - state.dayMs;
    state.dayMs = dayMs;
    state.viewMs = dayMs + offsetMs;
    state.spanMs = ZOOMS[state.zoom].ms; // clampView shortens it on a 23-hour day
    following = false;
    reload(loadDay);
  }
  prevDay.addEventListener("click", () => setDay(prevDayStart(state.dayMs)));
  nextDay.addEventListener("click", () => setDay(nextDayStart(state.dayMs)));
  dayInput.addEventListener("change", () => {
    if (!dayInput.value) return;
    const [y, m, d] = dayInput.value.split("-").map(Number);
    setDay(new Date(y, m - 1, d).getTime());
  });

  function togglePlay() {
    if (!realPlayer || realPlayer.originMs === null) return;
    following = true;
    if (video.paused) realPlayer.play();
    else realPlayer.pause();
    onPlayerState();
  }
  playBtn.addEventListener("click", togglePlay);
  backBtn.addEventListener("click", () => realPlayer && realPlayer.step(-1, state.fps));
  fwdBtn.addEventListener("click", () => realPlayer && realPlayer.step(1, state.fps));
  speed.addEventListener("change", () => {
    if (realPlayer) realPlayer.setRate(Number(speed.value));
  });

  const onKey = (e) => {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const tag = e.target && e.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") return;
    if (e.key === " " || e.key === "k") {
      if (tag === "BUTTON" && e.key === " ") return; // the button's own click
      togglePlay();
    } else if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const dir = e.key === "ArrowRight" ? 1 : -1;
      if (!realPlayer || realPlayer.originMs === null) return;
      if (video.paused) realPlayer.step(dir, state.fps);
      else seekTo(realPlayer.wallMs + dir * (e.shiftKey ? 60_000 : 10_000));
    } else if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      const i = SPEEDS.indexOf(Number(speed.value)) + (e.key === "ArrowUp" ? 1 : -1);
      if (i < 0 || i >= SPEEDS.length) return;
      speed.value = String(SPEEDS[i]);
      if (realPlayer) realPlayer.setRate(SPEEDS[i]);
    } else {
      return;
    }
    e.preventDefault();
  };
  document.addEventListener("keydown", onKey);

  const onResize = () => reload(loadView);
  window.addEventListener("resize", onResize);
  // While the day shown is today the recording grows: refresh the bar now and then.
  const refresh = setInterval(() => {
    if (dayEnd() > Date.now() && !drag && !pan) reload(loadDay);
  }, 30_000);

  const cleanup = () => {
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("resize", onResize);
    clearInterval(refresh);
    if (realPlayer) realPlayer.destroy();
    delete page.timeline;
  };

  // Hooks for tests and scripts: seek to a wall time, read the player.
  page.timeline = {
    seek: (ms) => seekTo(ms),
    get player() {
      return realPlayer;
    },
    get state() {
      return state;
    },
  };

  try {
    state.recording = await findRecording();
    realPlayer = new Player(video, state.recording.token, {
      nextRecordedAfter,
      onState: onPlayerState,
      onError: showError,
    });
    let asked = startParam ? Number(startParam) : NaN;
    if (startParam && Number.isNaN(asked)) asked = Date.parse(startParam);
    const latest = state.recording.latest_ms;
    if (!Number.isNaN(asked)) state.dayMs = dayStartOf(asked);
    else if (latest) state.dayMs = dayStartOf(latest);
    state.viewMs = state.dayMs;
    await loadDay();
    const last = state.dayRanges[state.dayRanges.length - 1];
    if (!Number.isNaN(asked)) {
      seekTo(asked);
    } else if (last) {
      // Open paused a minute before the end of the latest recorded stretch.
      seekTo(Math.max(last[0], last[1] - 60_000));
    }
  } catch (err) {
    showError(err);
  }
  return cleanup;
}

function ensureStylesheet() {
  const href = new URL("./timeline.css", import.meta.url).href;
  for (const link of document.querySelectorAll('link[rel="stylesheet"]')) {
    if (link.href === href) return;
  }
  document.head.append(el("link", { rel: "stylesheet", href }));
}
