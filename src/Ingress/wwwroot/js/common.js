// Helpers shared by the developer console and the add-on demo page.

// sessionStorage, not localStorage, so the app secret is dropped when the tab closes. Only the developer
// console stores credentials; the add-on demo page never sees an app secret.
const CREDENTIALS_STORAGE_KEY = "addonevents.appCredentials";

/** Returns the stored {appId, appSecret}, or null when nothing usable is stored. */
export function loadCredentials() {
  let stored;
  try {
    stored = JSON.parse(sessionStorage.getItem(CREDENTIALS_STORAGE_KEY) ?? "null");
  } catch {
    return null;
  }
  if (!stored || typeof stored.appId !== "string" || typeof stored.appSecret !== "string") {
    return null;
  }
  return { appId: stored.appId, appSecret: stored.appSecret };
}

export function saveCredentials({ appId, appSecret }) {
  sessionStorage.setItem(CREDENTIALS_STORAGE_KEY, JSON.stringify({ appId, appSecret }));
}

export function clearCredentials() {
  sessionStorage.removeItem(CREDENTIALS_STORAGE_KEY);
}

/** Builds an HTTP Basic Authorization header value from an app id and secret. */
export function basicAuthorization(appId, appSecret) {
  // btoa accepts only Latin-1 characters, so encode the UTF-8 bytes first.
  const bytes = new TextEncoder().encode(`${appId}:${appSecret}`);
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return `Basic ${btoa(binary)}`;
}

/**
 * Calls an endpoint of the signed-in app under /api/apps/{appId} with its stored credentials, as requestJson does.
 */
export function callApp(method, path, body) {
  const credentials = loadCredentials();
  if (!credentials) {
    return Promise.reject(new Error("Sign in first."));
  }
  const url = `/api/apps/${encodeURIComponent(credentials.appId)}${path}`;
  return requestJson(method, url, { authorization: basicAuthorization(credentials.appId, credentials.appSecret), body });
}

/** The unit of each numeric app limit, worded to follow the number, as in "500 tokens a day". */
export const LIMIT_UNITS = {
  requestsPerMinute: "requests a minute",
  userRequestsPerMinute: "requests a minute per user",
  tokensPerDay: "tokens a day",
  tokensPerMonth: "tokens a month",
  maxOutputTokens: "tokens per answer at most",
};

/**
 * An API call that failed. `code` is the stable error code from the JSON error body, or one derived
 * from the HTTP status when the body has none. `codeFromServer` records which, so pages show
 * only codes that the server sent.
 */
export class ApiError extends Error {
  constructor(status, code, message, { retryAfterSeconds = null, codeFromServer = false } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.codeFromServer = codeFromServer;
    this.retryAfterSeconds = retryAfterSeconds;
  }

  /** The code to show to the reader: only one that the server sent. */
  get displayCode() {
    return this.codeFromServer ? this.code : null;
  }
}

// Codes for error responses that carry no JSON body, such as an authentication
// challenge or an error page from a proxy in front of Ingress.
const CODES_BY_STATUS = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  413: "prompt_too_long",
  429: "rate_limited",
  500: "internal_error",
  503: "service_unavailable",
};

/**
 * Sends a JSON request and returns {status, data}, with data null for an empty body.
 * Throws ApiError for a network failure (code "network_error") and for every non-2xx response.
 */
export async function requestJson(method, url, { authorization, body } = {}) {
  const headers = { Accept: "application/json" };
  if (authorization) {
    headers.Authorization = authorization;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
  }

  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      // The Authorization header above is sent all the same. Without credentials, a 401 with
      // "WWW-Authenticate: Basic" comes back to the page instead of opening the browser's own sign-in dialog.
      credentials: "omit",
    });
  } catch {
    throw new ApiError(
      0,
      "network_error",
      "Could not reach the server. Check that Ingress is running and try again.",
    );
  }

  const data = await readJsonBody(response);
  if (response.ok) {
    return { status: response.status, data };
  }
  throw toApiError(response, data);
}

async function readJsonBody(response) {
  const text = await response.text();
  if (text === "") {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function toApiError(response, data) {
  const retryAfterSeconds = parseRetryAfter(response.headers.get("Retry-After"));
  if (data && typeof data.code === "string") {
    const message =
      typeof data.message === "string" && data.message !== ""
        ? data.message
        : `The server returned HTTP ${response.status}.`;
    return new ApiError(response.status, data.code, message, { retryAfterSeconds, codeFromServer: true });
  }
  const code = CODES_BY_STATUS[response.status] ?? "http_error";
  const statusText = response.statusText ? ` (${response.statusText})` : "";
  return new ApiError(
    response.status,
    code,
    `The server returned HTTP ${response.status}${statusText} with no error details.`,
    { retryAfterSeconds },
  );
}

// Only the delay-seconds form is read, and an HTTP-date value is ignored.
function parseRetryAfter(value) {
  if (value === null || !/^\d+$/.test(value.trim())) {
    return null;
  }
  return Number(value.trim());
}

/**
 * Shows an error next to a field: the text, then the error code in a <code> element when given.
 * Marks each listed input as invalid so assistive technology reads the error with it.
 */
export function showFieldError(errorElement, inputs, text, code = null) {
  errorElement.replaceChildren();
  errorElement.append(text);
  if (code) {
    const codeElement = document.createElement("code");
    codeElement.className = "error-code";
    codeElement.textContent = code;
    errorElement.append(" ", codeElement);
  }
  errorElement.hidden = false;
  for (const input of inputs) {
    input.setAttribute("aria-invalid", "true");
  }
}

export function clearFieldError(errorElement, inputs = []) {
  errorElement.replaceChildren();
  errorElement.hidden = true;
  for (const input of inputs) {
    input.removeAttribute("aria-invalid");
  }
}

/** Formats an ISO 8601 timestamp in the reader's locale, or returns fallback when it is missing or invalid. */
export function formatTimestamp(value, fallback = "—") {
  if (!value) {
    return fallback;
  }
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) {
    return fallback;
  }
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** Formats the time of day of a Date in the reader's locale, with seconds. */
export function formatTime(date) {
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

const RELATIVE_UNITS = [
  ["day", 86_400],
  ["hour", 3_600],
  ["minute", 60],
];

/** Says how long ago an ISO 8601 timestamp was ("just now", "5 minutes ago"), or returns fallback. */
export function formatRelative(value, fallback = "—", now = Date.now()) {
  const time = value ? Date.parse(value) : Number.NaN;
  if (Number.isNaN(time)) {
    return fallback;
  }
  const seconds = Math.round((now - time) / 1000);
  if (seconds < 45) {
    return "just now";
  }
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of RELATIVE_UNITS) {
    if (seconds >= size) {
      return format.format(-Math.floor(seconds / size), unit);
    }
  }
  return format.format(-Math.max(1, Math.round(seconds / 60)), "minute");
}
