// Users (the box's ONVIF users): list, add, change level or password, delete.
// Administrator only; the API refuses the others (403) and the page says why.

import { ApiError } from "./api.js";
import { el, clear, errorBox, confirmDialog } from "./dom.js";

const LEVELS = ["Administrator", "Operator", "User"];

function levelSelect(value, id) {
  // `selected` (not only .value) so that form.reset() comes back to it.
  return el("select", { id, "aria-label": "Level" }, LEVELS.map((l) => el("option", { value: l, selected: l === value }, l)));
}

export async function render(root, ctx) {
  root.append(el("h1", {}, "Users"));
  if (ctx.rank < 3) {
    root.append(el("p", { class: "notice", id: "users-forbidden" },
      `Managing users needs the Administrator level; you are logged in as ${ctx.session.username} (${ctx.session.level}).`));
    return;
  }
  const message = el("div", { id: "users-message" });
  const listSlot = el("div", { id: "user-list" });
  root.append(message, addForm(), listSlot);
  await refresh();

  function say(node) {
    clear(message).append(node);
  }

  function addForm() {
    const name = el("input", { id: "user-name", autocomplete: "off", maxlength: 64, required: true });
    const pass = el("input", { id: "user-password", type: "password", autocomplete: "new-password", maxlength: 64 });
    const level = levelSelect("User", "user-level");
    const errors = {
      username: el("p", { class: "field-error", hidden: true }),
      password: el("p", { class: "field-error", hidden: true }),
      level: el("p", { class: "field-error", hidden: true }),
    };
    const inputs = { username: name, password: pass, level };
    const form = el("form", { class: "card", id: "user-add-form", novalidate: true },
      el("h2", {}, "Add a user"),
      el("div", { class: "form-grid three" },
        el("div", {}, el("label", { for: "user-name" }, "Username"), name, errors.username),
        el("div", {}, el("label", { for: "user-password" }, "Password"), pass, errors.password),
        el("div", {}, el("label", { for: "user-level" }, "Level"), level, errors.level)),
      el("p", { class: "muted" }, "Users log in here, over ONVIF (WS-Security, Digest) and to RTSP. User: watch and replay. Operator: also cameras and recordings. Administrator: also users and settings."),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Add user")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const [k, node] of Object.entries(errors)) {
        node.hidden = true;
        inputs[k].setAttribute("aria-invalid", "false");
      }
      try {
        await ctx.api("users", { method: "POST", body: { username: name.value.trim(), password: pass.value, level: level.value } });
        say(el("p", { class: "notice ok-notice", role: "status" }, `User "${name.value.trim()}" added.`));
        form.reset();
        await refresh();
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        let placed = false;
        for (const [k, node] of Object.entries(errors)) {
          const text = err.fieldMessage(k);
          node.textContent = text;
          node.hidden = !text;
          inputs[k].setAttribute("aria-invalid", text ? "true" : "false");
          placed ||= Boolean(text);
        }
        if (!placed) say(errorBox(err.message));
      }
    });
    return form;
  }

  async function refresh() {
    let users;
    try {
      ({ users } = await ctx.api("users"));
    } catch (err) {
      if (err.status !== 401) clear(listSlot).append(errorBox(`Could not load the users: ${err.message}`));
      return;
    }
    clear(listSlot);
    if (!users.length) {
      listSlot.append(el("p", { class: "empty" }, "No users."));
      return;
    }
    listSlot.append(el("table", { class: "list users" },
      el("thead", {}, el("tr", {}, ["User", "Level", "New password", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, users.map(row))));
  }

  function row(user) {
    const level = levelSelect(user.level, `level-${user.username}`);
    const pass = el("input", { type: "password", autocomplete: "new-password", placeholder: "unchanged", "aria-label": `New password for ${user.username}`, maxlength: 64 });
    const save = el("button", { type: "button", class: "save" }, "Save");
    const del = el("button", { type: "button", class: "danger delete" }, "Delete");
    save.addEventListener("click", async () => {
      const body = {};
      if (level.value !== user.level) body.level = level.value;
      if (pass.value) body.password = pass.value;
      if (!Object.keys(body).length) {
        say(el("p", { class: "notice" }, `Nothing to change for "${user.username}".`));
        return;
      }
      try {
        await ctx.api(`users/${encodeURIComponent(user.username)}`, { method: "PATCH", body });
        say(el("p", { class: "notice ok-notice", role: "status" }, `User "${user.username}" saved.`));
        await refresh();
      } catch (err) {
        say(errorBox(`Could not change "${user.username}": ${err.message}`));
      }
    });
    del.addEventListener("click", async () => {
      if (!(await confirmDialog(`Delete user "${user.username}"? They can no longer log in, here or over ONVIF.`, "Delete"))) return;
      try {
        await ctx.api(`users/${encodeURIComponent(user.username)}`, { method: "DELETE" });
        say(el("p", { class: "notice ok-notice", role: "status" }, `User "${user.username}" deleted.`));
        await refresh();
      } catch (err) {
        const why = err.status === 409 ? `${err.message} (the box keeps at least one Administrator)` : err.message;
        say(errorBox(`Could not delete "${user.username}": ${why}`));
      }
    });
    return el("tr", { "data-user": user.username },
      el("td", { "data-label": "User" }, el("strong", {}, user.username), user.username === ctx.session.username ? el("span", { class: "muted" }, " (you)") : null),
      el("td", { "data-label": "Level" }, level),
      el("td", { "data-label": "Password" }, pass),
      el("td", { "data-label": "", class: "actions-cell" }, save, del));
  }
}
