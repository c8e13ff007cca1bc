// The read key and the calls to the P402 API of this same origin.
//
// The key comes from a "#key=..." URL fragment (which browsers never send to a server; it is
// removed from the address bar once read) or from the key form. It is kept in this tab's
// sessionStorage, or in localStorage when the user asks to be remembered, and is sent only
// in the Authorization header of requests to this page's own origin.

const STORAGE_NAME = "p402.dashboard.key";

/** Take a key from the URL fragment, if there is one, and clear it from the address bar. */
export function keyFromFragment() {
  const fragment = window.location.hash.replace(/^#/, "");
  if (!fragment) return null;
  const key = new URLSearchParams(fragment).get("key");
  if (key === null) return null;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  return key.trim() || null;
}

export function storedKey() {
  return sessionStorage.getItem(STORAGE_NAME) || localStorage.getItem(STORAGE_NAME);
}

export function storeKey(key, remember) {
  sessionStorage.setItem(STORAGE_NAME, key);
  if (remember) localStorage.setItem(STORAGE_NAME, key);
  else localStorage.removeItem(STORAGE_NAME);
}

export function forgetKey() {
  sessionStorage.removeItem(STORAGE_NAME);
  localStorage.removeItem(STORAGE_NAME);
}

/** An error answer of the API: its HTTP status and its {"error": {code, message}}. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** The route is not on this server (or the record is unknown). */
  get missing() {
    return this.status === 404 || this.status === 405;
  }

  /** The key is missing, wrong, or lacks the read role. */
  get unauthorised() {
    return this.status === 401 || this.status === 403;
  }
}

/** A URL of this origin for an API path and its query parameters (nulls left out). */
export function apiUrl(path, params = {}) {
  const url = new URL(path, window.location.origin);
  if (url.origin !== window.location.origin) throw new Error(`not an API path: ${path}`);
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(name, String(value));
  }
  return url;
}

async function request(key, path, params, accept) {
  let response;
  try {
    response = await fetch(apiUrl(path, params), {
      headers: { Authorization: `Bearer ${key}`, Accept: accept },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `the server did not answer (${error.message})`);
  }
  if (response.ok) return response;
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not the API's JSON error shape: keep the status line
  }
  throw new ApiError(response.status, code, message);
}

/** GET an API route as JSON. */
export async function getJson(key, path, params = {}) {
  const response = await request(key, path, params, "application/json");
  return response.json();
}

/** GET an API route as a Blob of the given media type (e.g. a receipt's PDF). */
export async function getBlob(key, path, accept) {
  const response = await request(key, path, {}, accept);
  return response.blob();
}
