// Cameras: the list with state and rates, add by RTSP URL or from discovered devices,
// edit, remove, recording and retention. Changing cameras needs the Operator level.

import { ApiError } from "./api.js";
import { el, clear, errorBox, confirmDialog, formatBitrate, formatFps, formatTime } from "./dom.js";

const TRANSPORTS = [
  ["RTSP", "RTSP (RTP over the RTSP connection)"],
  ["UDP", "UDP"],
  ["HTTP", "RTSP over HTTP (tunnel)"],
];
const MODES = [
  ["AlwaysConnect", "Always connected"],
  ["AutoConnect", "Connected while needed"],
  ["NeverConnect", "Disabled"],
];
const REFRESH_MS = 5000;

function stateBadge(camera) {
  const s = camera.stats.state;
  const kind = s === "Connected" ? "ok" : camera.mode === "NeverConnect" ? "" : "warn";
  return el("span", { class: `badge ${kind}` }, s);
}

function retentionText(camera) {
  if (camera.retention_s === null || camera.retention_s === undefined) return "–";
  if (camera.retention_s === 0) return "until space runs out";
  const days = camera.retention_s / 86400;
  return Number.isInteger(days) ? `${days} d` : `${Math.round(camera.retention_s / 3600)} h`;
}

/**
 * The add/edit form. `initial` is a camera (edit) or {url, name} (add); resolves through
 * `onSave(body)`, which throws ApiError whose field errors are shown next to the fields.
 */
function cameraForm({ initial = {}, editing = false, onSave, onCancel }) {
  const errors = {};
  const inputs = {};
  const field = (name, label, input, hint) => {
    inputs[name] = input;
    input.id = `camera-${name}`;
    input.name = name;
    errors[name] = el("p", { class: "field-error", id: `camera-${name}-error`, hidden: true, role: "alert" });
    input.setAttribute("aria-describedby", errors[name].id);
    return el("div", { class: name === "url" ? "wide" : "" },
      el("label", { for: input.id }, label), input, hint ? el("p", { class: "muted hint" }, hint) : null, errors[name]);
  };
  const select = (options, value) => {
    return el("select", {}, options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  };
  const retentionDays = initial.retention_s ? Math.round(initial.retention_s / 86400) : 0;
  const record = el("input", { type: "checkbox", id: "camera-record", checked: editing ? Boolean(initial.stats?.recording) : true });
  const recordWas = record.checked;
  const formError = el("div", { id: "camera-form-error" });
  const save = el("button", { type: "submit", class: "primary" }, editing ? "Save" : "Add camera");
  const form = el("form", { class: "card camera-form", id: editing ? "camera-edit-form" : "camera-add-form", novalidate: true },
    el("h2", {}, editing ? `Edit ${initial.name}` : "Add a camera"),
    el("div", { class: "form-grid" },
      field("url", "RTSP URL", el("input", { type: "text", inputmode: "url", autocomplete: "off", placeholder: "rtsp://192.168.1.20:554/stream1", value: initial.url || "", required: true }),
        "The camera's stream address; credentials go in the fields below."),
      editing ? null : field("name", "Name", el("input", { type: "text", maxlength: 64, placeholder: "e.g. front door", value: initial.name || "" })),
      field("username", "Camera username", el("input", { type: "text", autocomplete: "off", value: "" }), editing ? "Leave empty to keep the stored one." : null),
      field("password", "Camera password", el("input", { type: "password", autocomplete: "new-password", value: "" }), editing ? "Leave empty to keep the stored one." : null),
      field("transport", "Transport", select(TRANSPORTS, initial.transport || "RTSP")),
      editing ? field("mode", "Connection", select(MODES, initial.mode || "AlwaysConnect")) : null,
      field("retention_days", "Keep recordings (days, 0 = until space runs out)", el("input", { type: "number", min: 0, max: 36500, step: 1, value: String(retentionDays) })),
      el("div", {}, el("label", { class: "check" }, record, editing ? "Record this camera" : "Record this camera (continuously)"))),
    formError,
    el("div", { class: "actions" }, save, el("button", { type: "button", onclick: onCancel }, "Cancel")));

  const showErrors = (err) => {
    for (const [name, node] of Object.entries(errors)) {
      const text = err ? err.fieldMessage(name) : "";
      node.textContent = text;
      node.hidden = !text;
      inputs[name].setAttribute("aria-invalid", text ? "true" : "false");
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showErrors(null);
    clear(formError);
    const body = { url: inputs.url.value.trim(), transport: inputs.transport.value };
    if (!editing && inputs.name.value.trim()) body.name = inputs.name.value.trim();
    if (inputs.username.value) body.username = inputs.username.value;
    if (inputs.password.value) body.password = inputs.password.value;
    if (editing) body.mode = inputs.mode.value;
    const days = inputs.retention_days.value.trim();
    const retention = days === "" ? 0 : Number(days);
    // An edit sends only what changed: an offline camera shows "not recording" and
    // must not have its job switched by a save of its URL.
    if (!editing || retention !== retentionDays) body.retention_days = retention;
    if (!editing || record.checked !== recordWas) body.record = record.checked;
    save.disabled = true;
    try {
      await onSave(body);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showErrors(err);
      const unplaced = err.fields.filter((f) => !Object.keys(errors).some((n) => f.field === `body.${n}`));
      if (!err.fields.length || unplaced.length) {
        formError.append(errorBox(unplaced.length ? `${err.message}: ${unplaced.map((f) => `${f.field}: ${f.message}`).join("; ")}` : err.message));
      }
      const first = Object.keys(errors).find((n) => err.fieldMessage(n));
      if (first) inputs[first].focus();
    } finally {
      save.disabled = false;
    }
  });
  setTimeout(() => inputs.url.focus(), 0);
  return form;
}

export async function render(root, ctx) {
  const canEdit = ctx.rank >= 2;
  let stopped = false;
  let timer = null;
  const formSlot = el("div", { id: "camera-form-slot" });
  const message = el("div", { id: "cameras-message" });
  const listSlot = el("div", { id: "camera-list" });
  const discoveredSlot = el("div", { id: "discovered" });
  const addButton = canEdit
    ? el("button", { type: "button", class: "primary", id: "add-camera", onclick: () => openForm() }, "Add camera")
    : null;
  root.append(...[
    el("div", { class: "toolbar" }, el("h1", {}, "Cameras"), addButton),
    canEdit ? null : el("p", { class: "notice", id: "cameras-readonly" }, "You can watch these cameras. Adding, changing and removing cameras needs the Operator or Administrator level."),
    message, formSlot, listSlot,
    canEdit ? el("section", {}, el("h2", {}, "Discovered devices"), searchForm(), discoveredSlot) : null,
  ].filter(Boolean));

  function closeForm() {
    clear(formSlot);
    if (addButton) addButton.disabled = false;
  }

  function openForm(initial = {}) {
    if (addButton) addButton.disabled = true;
    clear(formSlot).append(cameraForm({
      initial,
      onCancel: closeForm,
      onSave: async (body) => {
        const camera = await ctx.api("cameras", { method: "POST", body });
        closeForm();
        flash(`Camera "${camera.name}" added${camera.recording ? " and recording" : ""}.`);
        await refresh();
      },
    }));
    formSlot.scrollIntoView({ block: "nearest" });
  }

  function openEdit(camera) {
    if (addButton) addButton.disabled = true;
    clear(formSlot).append(cameraForm({
      initial: camera,
      editing: true,
      onCancel: closeForm,
      onSave: async (body) => {
        if (body.url === camera.url) delete body.url;
        await ctx.api(`cameras/${encodeURIComponent(camera.token)}`, { method: "PATCH", body });
        closeForm();
        flash(`Camera "${camera.name}" saved.`);
        await refresh();
      },
    }));
    formSlot.scrollIntoView({ block: "nearest" });
  }

  async function remove(camera) {
    const ok = await confirmDialog(
      `Remove camera "${camera.name}"? It stops being recorded; what was recorded stays until its retention ends.`,
      "Remove");
    if (!ok) return;
    try {
      await ctx.api(`cameras/${encodeURIComponent(camera.token)}`, { method: "DELETE" });
      flash(`Camera "${camera.name}" removed.`);
    } catch (err) {
      clear(message).append(errorBox(`Could not remove "${camera.name}": ${err.message}`));
    }
    await refresh();
  }

  function flash(text) {
    clear(message).append(el("p", { class: "notice ok-notice", role: "status" }, text));
  }

  function renderList(cameras) {
    clear(listSlot);
    if (!cameras.length) {
      listSlot.append(el("p", { class: "empty" }, canEdit
        ? "No cameras yet. Add one by its RTSP URL, or pick a discovered device below."
        : "No cameras yet. An Operator or Administrator can add them."));
      return;
    }
    const rows = cameras.map((c) => el("tr", { "data-camera": c.token },
      el("td", { "data-label": "Name" }, el("a", { href: `#/timeline/${encodeURIComponent(c.token)}`, title: "Timeline" }, c.name)),
      el("td", { "data-label": "State" }, stateBadge(c)),
      el("td", { "data-label": "Bitrate" }, formatBitrate(c.stats.bitrate_bps)),
      el("td", { "data-label": "Frame rate" }, formatFps(c.stats.fps)),
      el("td", { "data-label": "Recording", class: "recording-cell" }, c.stats.recording ? "yes" : "no"),
      el("td", { "data-label": "Retention" }, retentionText(c)),
      el("td", { "data-label": "Last error", class: "wrap" }, c.stats.last_error || "–"),
      el("td", { "data-label": "URL", class: "wrap muted" }, c.url),
      canEdit ? el("td", { "data-label": "", class: "actions-cell" },
        el("button", { type: "button", class: "edit", onclick: () => openEdit(c) }, "Edit"),
        el("button", { type: "button", class: "danger remove", onclick: () => remove(c) }, "Remove")) : null));
    listSlot.append(el("table", { class: "list cameras" },
      el("thead", {}, el("tr", {}, ["Name", "State", "Bitrate", "Frame rate", "Recording", "Retention", "Last error", "URL", canEdit ? "" : null]
        .filter((h) => h !== null).map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
  }

  async function refresh() {
    try {
      const { cameras } = await ctx.api("cameras");
      if (!stopped) renderList(cameras);
    } catch (err) {
      if (!stopped && err.status !== 401) clear(listSlot).append(errorBox(`Could not load the cameras: ${err.message}`));
    }
  }

  // A new WS-Discovery probe from the box (POST /api/v1/discovered), as `onvif-nvr
  // discover` does; the credentials let the box ask the devices for their streams.
  function searchForm() {
    const user = el("input", { id: "discover-username", autocomplete: "off" });
    const pass = el("input", { id: "discover-password", type: "password", autocomplete: "new-password" });
    const addresses = el("input", { id: "discover-addresses", autocomplete: "off", placeholder: "empty: search the local network" });
    const status = el("div", { id: "discover-status", role: "status" });
    const button = el("button", { type: "submit", class: "primary" }, "Search for devices");
    const form = el("form", { class: "card", id: "discover-form", novalidate: true },
      el("div", { class: "form-grid three" },
        el("div", {}, el("label", { for: "discover-username" }, "Camera username"), user),
        el("div", {}, el("label", { for: "discover-password" }, "Camera password"), pass),
        el("div", {}, el("label", { for: "discover-addresses" }, "Only these addresses (host[:port], comma-separated)"), addresses)),
      status,
      el("div", { class: "actions" }, button));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        addresses: addresses.value.split(/[\s,]+/).filter(Boolean),
      };
      if (user.value) body.username = user.value;
      if (pass.value) body.password = pass.value;
      button.disabled = true;
      clear(status).append(el("p", { class: "muted" }, "Searching… (a few seconds)"));
      try {
        const { devices } = await ctx.api("discovered", { method: "POST", body });
        clear(status).append(el("p", { class: "muted" }, `${devices.length} device${devices.length === 1 ? "" : "s"} known.`));
        showDiscovered(devices);
      } catch (err) {
        const fields = err.fields?.length ? `: ${err.fields.map((f) => f.message).join("; ")}` : "";
        clear(status).append(errorBox(`The search failed: ${err.message}${fields}`));
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  async function loadDiscovered() {
    let devices;
    try {
      ({ devices } = await ctx.api("discovered"));
    } catch (err) {
      clear(discoveredSlot).append(errorBox(`Could not load the discovered devices: ${err.message}`));
      return;
    }
    showDiscovered(devices);
  }

  function showDiscovered(devices) {
    clear(discoveredSlot);
    if (!devices.length) {
      discoveredSlot.append(el("div", { class: "empty" },
        el("p", {}, "No ONVIF devices discovered yet."),
        el("p", {}, "Search above (or run ", el("code", {}, "onvif-nvr discover --user USER --password PASSWORD"),
          " on the box); the cameras found show here with their streams.")));
      return;
    }
    const rows = [];
    for (const d of devices) {
      const title = d.name || [d.manufacturer, d.model].filter(Boolean).join(" ") || d.endpoint;
      const streams = d.profiles.filter((p) => p.uri);
      rows.push(el("tr", { "data-endpoint": d.endpoint },
        el("td", { "data-label": "Device" }, el("strong", {}, title), el("div", { class: "muted wrap" }, d.xaddr)),
        el("td", { "data-label": "Status" }, el("span", { class: `badge ${d.status === "ok" ? "ok" : "warn"}` }, d.status), d.reason ? el("div", { class: "muted wrap" }, d.reason) : null),
        el("td", { "data-label": "Seen" }, formatTime(d.seen_ms)),
        el("td", { "data-label": "Streams", class: "actions-cell" },
          streams.length
            ? streams.map((p) => el("button", {
              type: "button",
              class: "add-discovered",
              title: p.uri,
              onclick: () => openForm({ url: p.uri, name: title.slice(0, 64) }),
            }, `Add ${p.name || p.token}${p.width ? ` (${p.width}×${p.height}${p.encoding ? ` ${p.encoding}` : ""})` : ""}`))
            : el("span", { class: "muted" }, d.status === "unauthorized" ? "Needs the camera's username and password: search again with them" : "No stream found"))));
    }
    discoveredSlot.append(el("table", { class: "list discovered" },
      el("thead", {}, el("tr", {}, ["Device", "Status", "Seen", "Streams"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
  }

  async function loop() {
    await refresh();
    if (!stopped) timer = setTimeout(loop, REFRESH_MS);
  }
  await loop();
  if (canEdit) loadDiscovered();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
