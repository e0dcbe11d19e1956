// Live video of one camera in a <video>: WebRTC first (low latency, the box passes the
// camera's H.264 through), fragmented MP4 over Media Source Extensions when WebRTC is not
// there (no answer in time, 501/503, the connection fails). The two endpoints:
//   POST /api/v1/cameras/{token}/webrtc {type:"offer", sdp} -> {type:"answer", sdp, session}
//   DELETE /api/v1/webrtc/{session}
//   GET /api/v1/cameras/{token}/live.mp4 (init segment, then one moof+mdat per picture)

import { api, ApiError } from "./api.js";

const ICE_GATHER_MS = 3000; // ICE gathering is local (host candidates): it is quick
const WEBRTC_FIRST_FRAME_MS = 8000; // offer -> first decoded picture, or MSE
const MSE_MAX_QUEUE_BYTES = 8 * 1024 * 1024; // behind by this much: reconnect
const MSE_KEEP_S = 6; // buffered media kept behind the playhead
const MSE_LIVE_LAG_S = 1.5; // further behind the live edge than this: jump
const STALL_MS = 10000; // no new picture this long: start again

/** Why a transport gave up; `fallback` says whether the other transport may help. */
class PlayError extends Error {
  constructor(message, fallback = true) {
    super(message);
    this.fallback = fallback;
  }
}

/**
 * Plays `token` in `video`. `mode`: "auto" (WebRTC, then MSE), "webrtc" or "mse".
 * `onStatus({state, transport, message})` reports: state "connecting", "playing",
 * "retrying" or "error".
 */
export class LivePlayer {
  constructor(video, token, { mode = "auto", onStatus = () => {} } = {}) {
    this.video = video;
    this.token = token;
    this.mode = mode;
    this.onStatus = onStatus;
    this.transport = "";
    this.stopped = false;
    this.generation = 0;
    this.retryTimer = null;
    this.teardown = null;
  }

  start() {
    this.stopped = false;
    this.run(this.mode === "mse" ? "mse" : "webrtc");
  }

  /** Stop playing and end the session on the box. */
  stop() {
    this.stopped = true;
    this.generation++;
    clearTimeout(this.retryTimer);
    this.close();
    this.video.removeAttribute("src");
    this.video.srcObject = null;
    this.video.load();
  }

  close() {
    const fn = this.teardown;
    this.teardown = null;
    if (fn) fn();
  }

  async run(transport) {
    const gen = ++this.generation;
    this.close();
    this.transport = transport;
    this.onStatus({ state: "connecting", transport });
    try {
      if (transport === "webrtc") await this.webrtc(gen);
      else await this.mse(gen);
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.close();
      const message = err instanceof ApiError ? `${err.message} (${err.status || "network"})` : err.message;
      if (err instanceof ApiError && err.status === 401) return; // logged out: the app shows login
      if (transport === "webrtc" && this.mode === "auto" && (!(err instanceof PlayError) || err.fallback)) {
        console.info(`camera ${this.token}: WebRTC failed (${message}); trying MSE`);
        this.run("mse");
        return;
      }
      this.onStatus({ state: "retrying", transport, message });
      this.retryTimer = setTimeout(() => {
        if (!this.stopped && gen === this.generation) this.start();
      }, 5000);
    }
  }

  /**
   * Resolves when a picture was decoded; a later failure or stall restarts via `fail`.
   * A hidden tab renders nothing (no frame callbacks): time spent hidden does not count.
   */
  watchFrames(gen, firstFrameMs, fail) {
    return new Promise((resolve, reject) => {
      const video = this.video;
      let last = performance.now();
      let waited = 0;
      let seen = false;
      let handle = 0;
      let frames = 0;
      const frame = () => {
        last = performance.now();
        if (!seen) {
          seen = true;
          resolve();
        }
      };
      // requestVideoFrameCallback where there is one; else decoded-frame counts.
      const rvfc = "requestVideoFrameCallback" in HTMLVideoElement.prototype;
      const onFrame = () => {
        frame();
        if (gen === this.generation) handle = video.requestVideoFrameCallback(onFrame);
      };
      if (rvfc) handle = video.requestVideoFrameCallback(onFrame);
      const tick = setInterval(() => {
        if (gen !== this.generation) return clearInterval(tick);
        if (!rvfc && video.getVideoPlaybackQuality) {
          const n = video.getVideoPlaybackQuality().totalVideoFrames;
          if (n > frames) {
            frames = n;
            frame();
          }
        }
        if (document.hidden) {
          last = performance.now();
          return;
        }
        if (!seen) {
          waited += 250;
          if (waited >= firstFrameMs) {
            clearInterval(tick);
            reject(new PlayError(`no picture within ${firstFrameMs / 1000} s`));
          }
        } else if (performance.now() - last > STALL_MS) {
          clearInterval(tick);
          fail(new PlayError(`no picture for ${STALL_MS / 1000} s`, false));
        }
      }, 250);
      this.addTeardown(() => {
        clearInterval(tick);
        if (rvfc) video.cancelVideoFrameCallback(handle);
      });
    });
  }

  addTeardown(fn) {
    const previous = this.teardown;
    this.teardown = () => {
      try {
        fn();
      } finally {
        if (previous) previous();
      }
    };
  }

  /** A failure after playback started: start over with the same transport policy. */
  failLater(gen) {
    return (err) => {
      if (gen !== this.generation || this.stopped) return;
      console.warn(`camera ${this.token}: ${this.transport} stopped: ${err.message}`);
      this.close();
      this.onStatus({ state: "retrying", transport: this.transport, message: err.message });
      this.retryTimer = setTimeout(() => {
        if (!this.stopped && gen === this.generation) this.start();
      }, 2000);
    };
  }

  // -- WebRTC ------------------------------------------------------------------------------
  async webrtc(gen) {
    if (typeof RTCPeerConnection === "undefined") throw new PlayError("this browser has no WebRTC");
    const pc = new RTCPeerConnection({ iceServers: [] });
    const abort = new AbortController();
    let session = null;
    this.addTeardown(() => {
      abort.abort();
      if (session) {
        // Before pc.close(), whose DTLS close may end the session on the box first.
        // keepalive: the DELETE still goes out when the tab is closing.
        api(`webrtc/${encodeURIComponent(session)}`, { method: "DELETE", quiet401: true, keepalive: true }).catch(() => {});
      }
      pc.close();
    });
    pc.addTransceiver("video", { direction: "recvonly" });
    const tracked = new Promise((resolve) => {
      pc.ontrack = (event) => resolve(event.streams[0] || new MediaStream([event.track]));
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, ICE_GATHER_MS);
    if (gen !== this.generation) return;
    let answer;
    try {
      answer = await withTimeout(
        api(`cameras/${encodeURIComponent(this.token)}/webrtc`, {
          method: "POST",
          body: { type: "offer", sdp: pc.localDescription.sdp },
          signal: abort.signal,
        }),
        WEBRTC_FIRST_FRAME_MS,
        "the box did not answer the WebRTC offer",
        abort,
      );
    } catch (err) {
      if (err instanceof ApiError && (err.status === 501 || err.status === 503)) {
        throw new PlayError(`WebRTC: ${err.message}`);
      }
      throw err;
    }
    session = answer.session;
    if (gen !== this.generation) return;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    const failed = new Promise((_, reject) => {
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") reject(new PlayError("the WebRTC connection failed"));
      });
    });
    const stream = await Promise.race([tracked, failed]);
    this.video.srcObject = stream;
    this.video.play().catch(() => {});
    const fail = this.failLater(gen);
    await Promise.race([this.watchFrames(gen, WEBRTC_FIRST_FRAME_MS, fail), failed]);
    failed.catch(fail); // once playing, a failed connection starts over (before: fallback)
    if (gen === this.generation) this.onStatus({ state: "playing", transport: "webrtc" });
  }

  // -- MSE ---------------------------------------------------------------------------------
  async mse(gen) {
    const MS = window.ManagedMediaSource || window.MediaSource;
    if (!MS) throw new PlayError("this browser has neither WebRTC nor Media Source Extensions", false);
    const abort = new AbortController();
    const video = this.video;
    let url = "";
    this.addTeardown(() => {
      abort.abort();
      if (url) URL.revokeObjectURL(url);
    });
    const response = await api(`cameras/${encodeURIComponent(this.token)}/live.mp4`, {
      raw: true,
      signal: abort.signal,
    });
    const type = response.headers.get("Content-Type") || "";
    if (!MS.isTypeSupported(type)) {
      throw new PlayError(`this browser cannot play ${type || "the stream"}`, false);
    }
    const source = new MS();
    url = URL.createObjectURL(source);
    video.srcObject = null;
    video.disableRemotePlayback = true;
    video.src = url;
    await new Promise((resolve) => source.addEventListener("sourceopen", resolve, { once: true }));
    if (gen !== this.generation) return;
    const buffer = source.addSourceBuffer(type);
    const queue = [];
    let queued = 0;
    let streamError = null;
    const fail = this.failLater(gen);

    const pump = () => {
      if (buffer.updating || gen !== this.generation || source.readyState !== "open") return;
      trim();
      if (buffer.updating) return;
      const chunk = queue.shift();
      if (!chunk) return;
      queued -= chunk.byteLength;
      try {
        buffer.appendBuffer(chunk);
      } catch (err) {
        // QuotaExceededError: the buffer is full of old media; drop it and go on.
        if (err.name === "QuotaExceededError" && video.currentTime > 1) {
          queue.unshift(chunk);
          queued += chunk.byteLength;
          buffer.remove(0, Math.max(0, video.currentTime - 1));
        } else {
          fail(new PlayError(`the browser refused the stream: ${err.message}`, false));
        }
      }
    };
    // Old media is removed so a wall of cameras does not grow memory for hours.
    const trim = () => {
      const ranges = buffer.buffered;
      if (!ranges.length) return;
      const start = ranges.start(0);
      const end = ranges.end(ranges.length - 1);
      if (end - video.currentTime > MSE_LIVE_LAG_S) {
        video.currentTime = Math.max(start, end - 0.3); // to the live edge
      }
      if (video.currentTime - start > MSE_KEEP_S * 2) {
        buffer.remove(start, video.currentTime - MSE_KEEP_S);
      }
    };
    buffer.addEventListener("updateend", () => {
      if (video.paused && buffer.buffered.length) video.play().catch(() => {});
      pump();
    });
    buffer.addEventListener("error", () => fail(new PlayError("the browser could not decode the stream", false)));

    const reader = response.body.getReader();
    (async () => {
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done || gen !== this.generation) break;
          queue.push(value);
          queued += value.byteLength;
          if (queued > MSE_MAX_QUEUE_BYTES) throw new PlayError("the browser fell too far behind the stream", false);
          pump();
        }
        if (gen === this.generation) fail(new PlayError("the box ended the stream", false));
      } catch (err) {
        if (err.name !== "AbortError" && gen === this.generation) {
          streamError = err;
          fail(err instanceof PlayError ? err : new PlayError(`stream: ${err.message}`, false));
        }
      }
    })();
    this.addTeardown(() => reader.cancel().catch(() => {}));
    await this.watchFrames(gen, WEBRTC_FIRST_FRAME_MS, fail);
    if (streamError) throw streamError;
    if (gen === this.generation) this.onStatus({ state: "playing", transport: "mse" });
  }
}

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === "complete") done();
    };
    // Gathering that never says complete still has its host candidates by now.
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function withTimeout(promise, ms, message, abort) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        abort.abort();
        reject(new PlayError(message));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
