// System: version, uptime, CPU, ingest, viewers, clock and NTP, storage volumes, and the
// ONVIF addresses clients need (the device service URL).

import { el, clear, errorBox, formatBytes, formatDuration, formatTime } from "./dom.js";

const REFRESH_MS = 5000;

function fact(key, value, id) {
  return el("div", { class: "fact", id }, el("div", { class: "k" }, key), el("div", { class: "v" }, value));
}

function meter(usedFraction) {
  const bar = el("span");
  bar.style.width = `${Math.round(Math.min(1, Math.max(0, usedFraction)) * 100)}%`; // CSSOM: allowed by the CSP
  const kind = usedFraction > 0.95 ? "bad" : usedFraction > 0.85 ? "warn" : "";
  return el("div", { class: `meter ${kind}`, role: "img", "aria-label": `${Math.round(usedFraction * 100)} % used` }, bar);
}

function volumeBadge(status) {
  const kind = status === "ok" ? "ok" : status === "offline" ? "bad" : "warn";
  return el("span", { class: `badge ${kind}` }, status);
}

export async function render(root, ctx) {
  let stopped = false;
  let timer = null;
  const facts = el("div", { class: "facts", id: "system-facts" });
  const onvif = el("div", { id: "system-onvif" });
  const storage = el("div", { id: "system-storage" });
  root.append(el("h1", {}, "System"), facts, el("h2", {}, "ONVIF"), onvif, el("h2", {}, "Storage"), storage);

  const device = `${location.origin}/onvif/device_service`;
  onvif.append(el("div", { class: "card" },
    el("p", {}, "Device service (add the box to a VMS with this address): ",
      el("code", { id: "device-service-url", class: "wrap" }, device)),
    el("p", { class: "muted" }, "WSDLs: ", el("a", { href: "/onvif/wsdl/" }, "/onvif/wsdl/"),
      " · REST API: ", el("a", { href: "/api/openapi.json" }, "/api/openapi.json"))));

  async function refresh() {
    let sys;
    let store;
    try {
      [sys, store] = await Promise.all([ctx.api("system"), ctx.api("storage")]);
    } catch (err) {
      if (!stopped && err.status !== 401) clear(facts).append(errorBox(`Could not load the system status: ${err.message}`));
      return;
    }
    if (stopped) return;
    const ntp = sys.ntp_servers.length ? sys.ntp_servers.join(", ") : "none configured";
    clear(facts).append(
      fact("Version", sys.version, "fact-version"),
      fact("Uptime", formatDuration(sys.uptime_s), "fact-uptime"),
      fact("CPU (this process)", sys.cpu_percent === null ? "–" : `${sys.cpu_percent.toFixed(1)} %`, "fact-cpu"),
      fact("Load average", sys.load_average.map((x) => x.toFixed(2)).join(" "), "fact-load"),
      fact("Ingest", `${sys.ingest_mbit_s.toFixed(2)} Mbit/s`, "fact-ingest"),
      fact("Sent to viewers", sys.egress_mbit_s === null || sys.egress_mbit_s === undefined ? "–" : `${sys.egress_mbit_s.toFixed(2)} Mbit/s`, "fact-egress"),
      fact("Live viewers", String(sys.live_viewers), "fact-viewers"),
      fact("Cameras (recording)", `${sys.cameras} (${sys.recording})`, "fact-cameras"),
      fact("Box time (UTC)", new Date(sys.utc).toISOString().replace("T", " ").replace(/\.\d+Z$/, " Z"), "fact-time"),
      fact("NTP servers", ntp, "fact-ntp"),
      fact("Clock", clockText(sys), "fact-clock"));
    renderStorage(store);
  }

  function renderStorage(store) {
    clear(storage);
    if (!store.volumes.length) {
      storage.append(el("p", { class: "empty" }, "No storage volumes are configured: nothing can be recorded."));
      return;
    }
    storage.append(el("table", { class: "list volumes" },
      el("thead", {}, el("tr", {}, ["Path", "Status", "Size", "Free", "Used", "Oldest data"].map((h) => el("th", {}, h)))),
      el("tbody", {}, store.volumes.map((v) => {
        const used = v.total_bytes ? 1 - (v.free_bytes ?? 0) / v.total_bytes : 0;
        return el("tr", {},
          el("td", { "data-label": "Path", class: "wrap" }, v.path),
          el("td", { "data-label": "Status" }, volumeBadge(v.status), v.reason ? el("div", { class: "muted wrap" }, v.reason) : null),
          el("td", { "data-label": "Size" }, formatBytes(v.total_bytes)),
          el("td", { "data-label": "Free" }, formatBytes(v.free_bytes), el("div", { class: "muted" }, `keeps ${formatBytes(v.min_free_bytes)} free`)),
          el("td", { "data-label": "Used" }, v.total_bytes ? meter(used) : "–"),
          el("td", { "data-label": "Oldest data" }, v.oldest_ms === null ? "no data yet" : formatTime(v.oldest_ms)));
      }))),
    el("p", { class: "muted" }, `Recordings are written in segments of ${store.segment_s} s.`));
  }

  async function loop() {
    await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  }
  await loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function clockText(sys) {
  if (sys.clock_synchronized === null || sys.clock_synchronized === undefined) return "NTP state unknown";
  if (!sys.clock_synchronized) return "not synchronized by NTP";
  const err = sys.clock_max_error_ms;
  return err === null || err === undefined ? "NTP synchronized" : `NTP synchronized, ± ${err.toFixed(1)} ms`;
}
