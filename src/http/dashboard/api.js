// Talking to /api/v1: JSON in and out, the CSRF token on every state change, errors as
// ApiError {status, code, message} (the API's own {"code", "message"}), and the live event stream.

let csrfToken = null;

/** The token from the login answer or GET /api/v1/session; sent on every POST and DELETE. */
export function setCsrf(token) {
  csrfToken = token || null;
}

/** A failed request, as the API explained it. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called when an API call answers 401 (the session expired or was never there). */
let onUnauthorized = () => {};
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

/** Builds a query string from an object, leaving out empty values; arrays repeat the key. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) q.append(key, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

/** One request: resolves to {status, data} (data: the parsed JSON, or null for 204). */
export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") {
    headers["Content-Type"] = "application/json";
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch("/api/v1" + path, init);
  } catch (e) {
    throw new ApiError(0, "NETWORK", "The broker did not answer (" + e.message + ").");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = (data && data.code) || "HTTP_" + response.status;
    const message = (data && data.message) || text.trim() || response.statusText || "request failed";
    if (response.status === 401 && path !== "/login" && path !== "/session") onUnauthorized();
    throw new ApiError(response.status, code, message);
  }
  return { status: response.status, data };
}

export const get = async (path) => (await request("GET", path)).data;
export const post = async (path, body) => (await request("POST", path, body)).data;
export const del = async (path) => (await request("DELETE", path)).data;

/** A path segment: client ids and topics may hold anything, '/' included. */
export const seg = (s) => encodeURIComponent(s);

/**
 * The server-sent event stream (GET /api/v1/events[?filter=...]): `handlers` maps event names
 * (stats, client, message, dropped) to functions of the parsed data; `onState(open, error)` hears
 * whether the stream is up. A stream the server refused (403, 503...) is not retried by the
 * browser: we ask the same URL with fetch to learn why, report it, and try again later.
 * Returns a function that closes the stream for good.
 */
export function events(filters, handlers, onState) {
  const url = "/api/v1/events" + query({ filter: filters });
  let source = null;
  let retry = null;
  let closed = false;
  const open = () => {
    if (closed) return;
    source = new EventSource(url);
    source.onopen = () => onState && onState(true, null);
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => {
        let data;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        handler(data);
      });
    }
    source.onerror = async () => {
      if (closed) return;
      if (source.readyState !== EventSource.CLOSED) {
        onState && onState(false, null); // the browser reconnects by itself
        return;
      }
      source.close();
      onState && onState(false, await why(url));
      retry = setTimeout(open, 5000);
    };
  };
  open();
  return () => {
    closed = true;
    clearTimeout(retry);
    if (source) source.close();
  };
}

/** What the server says about a stream URL it refused (null when it would answer now). */
async function why(url) {
  const abort = new AbortController();
  try {
    const r = await fetch(url, { credentials: "same-origin", signal: abort.signal });
    if (r.ok) {
      abort.abort();
      return null;
    }
    let body = null;
    try {
      body = await r.json();
    } catch {
      body = null;
    }
    if (r.status === 401) onUnauthorized();
    return new ApiError(r.status, (body && body.code) || "HTTP_" + r.status, (body && body.message) || r.statusText);
  } catch (e) {
    return new ApiError(0, "NETWORK", "The broker did not answer (" + e.message + ").");
  }
}
