// The REST client of every page: JSON in and out, the session's CSRF token on unsafe
// methods, one error type (the API's {"error": {code, message, fields}}).

/** A failed API call: HTTP status, the API's error code, message and field errors. */
export class ApiError extends Error {
  constructor(status, code, message, fields = []) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.fields = fields;
  }

  /** The message of one field ("body.url"), or "". */
  fieldMessage(name) {
    const hit = this.fields.find((f) => f.field === name || f.field === `body.${name}`);
    return hit ? hit.message : "";
  }
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);
let csrf = "";
let onUnauthorized = () => {};

/** The session's CSRF token (from POST or GET /api/v1/session). */
export function setCsrf(token) {
  csrf = token || "";
}

/** Called with the ApiError when a call answers 401 (the app shows the login page). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Call the API: `path` is "/api/v1/..." (or relative to it, "cameras"); `body` is sent as
 * JSON. Resolves to the parsed JSON (null for 204); throws ApiError.
 * `raw: true` resolves to the fetch Response instead (streams), after the status check.
 */
export async function api(path, { method = "GET", body, signal, raw = false, quiet401 = false, keepalive = false } = {}) {
  const url = path.startsWith("/") ? path : `/api/v1/${path}`;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && csrf) headers["X-CSRF-Token"] = csrf;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
      keepalive,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "NetworkError", "the box cannot be reached (network error)");
  }
  if (!response.ok) {
    const err = await errorOf(response);
    if (response.status === 401 && !quiet401) onUnauthorized(err);
    throw err;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response.text();
}

async function errorOf(response) {
  let code = `HTTP${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  let fields = [];
  try {
    const data = await response.json();
    if (data && data.error) {
      code = data.error.code || code;
      message = data.error.message || message;
      fields = data.error.fields || [];
    }
  } catch {
    // Not the API's JSON (a proxy, a 502): keep the status line.
  }
  return new ApiError(response.status, code, message, fields);
}

/** Log in; resolves to {username, level, csrf_token}. */
export async function login(username, password) {
  const info = await api("session", { method: "POST", body: { username, password }, quiet401: true });
  setCsrf(info.csrf_token);
  return info;
}

/** The current session or null when not logged in. */
export async function whoami() {
  try {
    const info = await api("session", { quiet401: true });
    setCsrf(info.csrf_token);
    return info;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

export async function logout() {
  try {
    await api("session", { method: "DELETE", quiet401: true });
  } finally {
    setCsrf("");
  }
}
