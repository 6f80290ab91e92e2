// Add-on demo: requests an end-user token, opens the SignalR connection to /hubs/addon,
// posts prompts to /api/prompts, and matches the hub's PromptCompleted and PromptFailed
// events to those requests by requestId.
// The global `signalR` comes from /lib/signalr/signalr.min.js, which the build copies from npm.
import {
  basicAuthorization,
  clearFieldError,
  formatTimestamp,
  loadCredentials,
  requestJson,
  saveCredentials,
  showFieldError,
} from "./common.js";

const HUB_URL = "/hubs/addon";
const TOKEN_TTL_SECONDS = 600;

// Hub events whose request is not on this page yet. They arrive first when the hub
// is faster than the 202 response, or belong to another tab of the same user.
// The cap keeps the second kind from growing without bound.
const MAX_UNMATCHED_EVENTS = 100;

const SIGNALR_MISSING_MESSAGE =
  "The SignalR client (/lib/signalr/signalr.min.js) did not load. Run npm install in src/Ingress " +
  "and build the Ingress project, which copies the file into wwwroot.";

const CLOSED_WHILE_WAITING_MESSAGE =
  "The connection closed while this request was waiting. " +
  "If no answer appears after a new session starts, send the prompt again.";

/** Sentences shown for each error code. Codes that carry a delay map to a function that receives the failure. */
const ERROR_SENTENCES = {
  no_key_configured:
    "This app has no OpenAI key yet. The app developer must save one in the developer console.",
  key_invalid:
    "OpenAI rejected this app's key. The app developer must save a valid key in the developer console.",
  key_unreadable:
    "This app's stored key could not be read. The app developer must save the key again in the developer console.",
  upstream_auth_failed:
    "OpenAI rejected this app's key for this request. The app developer must replace it in the developer console.",
  upstream_bad_request: "OpenAI rejected the request as invalid. Change the prompt and try again.",
  upstream_invalid_response: "OpenAI sent a response that could not be read. Try again.",
  request_expired: "The prompt waited too long before it could be answered. Send it again.",
  upstream_unavailable: "OpenAI could not be reached or returned a server error. Try again in a minute.",
  upstream_timeout: "OpenAI did not answer in time. Try again, or send a shorter prompt.",
  upstream_rate_limited: (failure) =>
    failure.retryAfterSeconds
      ? `OpenAI is rate-limiting this app. Try again in ${formatSeconds(failure.retryAfterSeconds)}.`
      : "OpenAI is rate-limiting this app. Wait a moment and try again.",
  rate_limited: (failure) =>
    failure.retryAfterSeconds
      ? `You are sending prompts too quickly. Try again in ${formatSeconds(failure.retryAfterSeconds)}.`
      : "You are sending prompts too quickly. Wait a moment and try again.",
  quota_exceeded: "This app has used up its prompt quota. Contact the app developer.",
  prompt_too_long: "The prompt is too long. Shorten it and send it again.",
  invalid_request: "The prompt was not accepted. Check that it is not empty.",
  unauthorized: "The session token is missing, invalid or expired. Select Start session to get a new one.",
  forbidden: "This user may not use the add-on. Contact the app developer.",
  addon_inactive: "The add-on is switched off for this app. Contact the app developer.",
  model_not_found: "The requested model is not available to this app's OpenAI key.",
  content_filtered: "OpenAI's content filter blocked this answer. Rephrase the prompt and try again.",
  refused: "The model declined to answer this prompt.",
  service_unavailable: "AddOnEvents is temporarily unavailable. Try again in a minute.",
  internal_error:
    "Something went wrong inside AddOnEvents. Try again, and contact the app developer if it keeps failing.",
};

const FINISH_REASONS = {
  stop: "finished normally",
  length: "cut off at the output token limit",
  content_filter: "stopped by the content filter",
};

const elements = {
  sessionForm: document.getElementById("session-form"),
  appId: document.getElementById("app-id"),
  appIdError: document.getElementById("app-id-error"),
  appSecret: document.getElementById("app-secret"),
  appSecretError: document.getElementById("app-secret-error"),
  userId: document.getElementById("user-id"),
  userIdError: document.getElementById("user-id-error"),
  sessionError: document.getElementById("session-error"),
  startSessionButton: document.getElementById("start-session-button"),
  endSessionButton: document.getElementById("end-session-button"),
  sessionInfo: document.getElementById("session-info"),
  connectionDot: document.getElementById("connection-dot"),
  connectionText: document.getElementById("connection-text"),
  connectionDetail: document.getElementById("connection-detail"),
  promptForm: document.getElementById("prompt-form"),
  prompt: document.getElementById("prompt"),
  promptError: document.getElementById("prompt-error"),
  sendButton: document.getElementById("send-button"),
  answersEmpty: document.getElementById("answers-empty"),
  answers: document.getElementById("answers"),
};

/** The current user token and its expiry, or null before a session starts. */
let session = null;
let connection = null;
let requestCount = 0;

/** Entries still waiting for a hub event, by lower-case requestId. */
const waitingEntries = new Map();
const unmatchedEvents = new Map();

function formatSeconds(seconds) {
  return seconds === 1 ? "1 second" : `${seconds} seconds`;
}

function describeFailure(failure) {
  const sentence = ERROR_SENTENCES[failure.code];
  if (typeof sentence === "function") {
    return sentence(failure);
  }
  if (sentence) {
    return sentence;
  }
  return failure.message || "The request failed, and the server gave no reason.";
}

// --- Connection indicator ---

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Disconnected",
};

function setConnectionState(state, detail = null) {
  elements.connectionDot.className = `connection-dot connection-${state}`;
  elements.connectionText.textContent = CONNECTION_LABELS[state];
  elements.connectionDetail.textContent = detail ?? "";
  elements.connectionDetail.hidden = !detail;
}

// --- Session ---

function clearSessionErrors() {
  clearFieldError(elements.appIdError, [elements.appId]);
  clearFieldError(elements.appSecretError, [elements.appSecret]);
  clearFieldError(elements.userIdError, [elements.userId]);
  clearFieldError(elements.sessionError);
}

/** Shows a token request error next to the field that most likely caused it. */
function showTokenError(error) {
  if (error.code === "unauthorized" || error.code === "forbidden") {
    showFieldError(elements.appSecretError, [elements.appId, elements.appSecret], error.message, error.displayCode);
  } else if (error.code === "not_found" && error.codeFromServer) {
    showFieldError(elements.appIdError, [elements.appId], error.message, error.displayCode);
  } else if (error.code === "invalid_request") {
    // The app id and secret travel in the Authorization header, so a rejected body means the user id.
    showFieldError(elements.userIdError, [elements.userId], error.message, error.displayCode);
  } else {
    showFieldError(elements.sessionError, [], error.message, error.displayCode);
  }
}

async function startSession() {
  clearSessionErrors();
  const appId = elements.appId.value.trim();
  const appSecret = elements.appSecret.value;
  const userId = elements.userId.value.trim();

  const missing = [
    [appId, elements.appIdError, elements.appId, "Enter the app id."],
    [appSecret, elements.appSecretError, elements.appSecret, "Enter the app secret."],
    [userId, elements.userIdError, elements.userId, "Enter an end-user id, for example u-123."],
  ].filter(([value]) => value === "");
  for (const [, errorElement, input, text] of missing) {
    showFieldError(errorElement, [input], text);
  }
  if (missing.length > 0) {
    missing[0][2].focus();
    return;
  }
  if (typeof signalR === "undefined") {
    showFieldError(elements.sessionError, [], SIGNALR_MISSING_MESSAGE);
    return;
  }

  elements.startSessionButton.disabled = true;
  try {
    await endSession();
    let tokenResponse;
    try {
      tokenResponse = await requestJson("POST", `/api/apps/${encodeURIComponent(appId)}/user-tokens`, {
        authorization: basicAuthorization(appId, appSecret),
        body: { userId, ttlSeconds: TOKEN_TTL_SECONDS },
      });
    } catch (error) {
      showTokenError(error);
      return;
    }

    const token = tokenResponse.data?.token;
    if (typeof token !== "string" || token === "") {
      showFieldError(elements.sessionError, [], "The server accepted the request but returned no token.");
      return;
    }
    saveCredentials({ appId, appSecret, userId });
    session = { token, userId, expiresAt: tokenResponse.data.expiresAt ?? null };
    elements.endSessionButton.hidden = false;
    elements.sessionInfo.hidden = false;
    elements.sessionInfo.textContent =
      `Token for end user ${userId}, valid until ${formatTimestamp(session.expiresAt, "an unknown time")}.`;

    await openConnection();
  } finally {
    elements.startSessionButton.disabled = false;
  }
}

async function openConnection() {
  const token = session.token;
  const hub = new signalR.HubConnectionBuilder()
    .withUrl(HUB_URL, { accessTokenFactory: () => token })
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.Warning)
    .build();

  hub.on("PromptCompleted", (payload) => handleHubEvent("completed", payload));
  hub.on("PromptFailed", (payload) => handleHubEvent("failed", payload));

  // Callbacks check `hub === connection` so that stopping an old connection leaves the indicator alone.
  hub.onreconnecting(() => {
    if (hub !== connection) return;
    setConnectionState("reconnecting", "The connection dropped. Trying to restore it…");
    markWaitingEntriesInterrupted(
      "The connection dropped while this request was waiting. If no answer appears, send the prompt again.",
    );
  });
  hub.onreconnected(() => {
    if (hub !== connection) return;
    setConnectionState("connected");
  });
  hub.onclose((error) => {
    if (hub !== connection) return;
    const reason = error ? ` (${error.message})` : "";
    const detail = isSessionExpired()
      ? "The session token has expired. Select Start session to get a new one."
      : `The connection closed and could not be restored${reason}. Select Start session to connect again.`;
    setConnectionState("disconnected", detail);
    markWaitingEntriesInterrupted(CLOSED_WHILE_WAITING_MESSAGE, { connectionLost: true });
  });

  connection = hub;
  setConnectionState("connecting");
  try {
    await hub.start();
  } catch (error) {
    if (hub !== connection) return;
    setConnectionState("disconnected");
    showFieldError(
      elements.sessionError,
      [],
      `Could not open the live connection to ${HUB_URL}: ${error.message}`,
    );
    return;
  }
  if (hub === connection) {
    setConnectionState("connected");
  }
}

async function endSession() {
  const hub = connection;
  connection = null;
  session = null;
  markWaitingEntriesInterrupted(
    "The session ended while this request was waiting. " +
      "If no answer appears after a new session for the same user starts, send the prompt again.",
    { connectionLost: true },
  );
  elements.endSessionButton.hidden = true;
  elements.sessionInfo.hidden = true;
  setConnectionState("disconnected");
  if (hub) {
    await hub.stop();
  }
}

// --- Prompts and results ---

function createEntry(promptText) {
  requestCount++;
  const item = document.createElement("li");
  item.className = "answer";

  const header = document.createElement("div");
  header.className = "answer-header";
  const title = document.createElement("span");
  title.className = "answer-title";
  title.textContent = `Request ${requestCount}`;
  const badge = document.createElement("span");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = now.toLocaleTimeString();
  header.append(title, " ", badge, " ", time);

  const promptElement = document.createElement("p");
  promptElement.className = "answer-prompt";
  promptElement.textContent = promptText;

  const body = document.createElement("div");
  body.className = "answer-body";

  const meta = document.createElement("p");
  meta.className = "answer-meta";
  meta.hidden = true;

  item.append(header, promptElement, body, meta);
  elements.answers.prepend(item);
  elements.answersEmpty.hidden = true;

  const entry = { item, badge, body, meta, requestId: null };
  setEntryState(entry, "pending", "Sending…");
  return entry;
}

function setEntryState(entry, badgeState, label) {
  entry.badge.className = `badge badge-${badgeState}`;
  entry.badge.textContent = label;
}

function completeEntry(entry, payload) {
  setEntryState(entry, "active", "Answered");
  entry.body.replaceChildren();
  const text = document.createElement("p");
  text.className = "answer-text";
  text.textContent = typeof payload.text === "string" && payload.text !== "" ? payload.text : "(empty answer)";
  entry.body.append(text);

  const parts = [];
  if (payload.finishReason) {
    const words = FINISH_REASONS[payload.finishReason];
    parts.push(words ? `Finish reason: ${payload.finishReason} (${words})` : `Finish reason: ${payload.finishReason}`);
  }
  const usage = payload.usage;
  if (usage) {
    const promptTokens = usage.promptTokens ?? "?";
    const completionTokens = usage.completionTokens ?? "?";
    const totalTokens = usage.totalTokens ?? "?";
    parts.push(`Tokens: ${promptTokens} prompt + ${completionTokens} completion = ${totalTokens} total`);
  }
  if (entry.requestId) {
    parts.push(`Request id: ${entry.requestId}`);
  }
  entry.meta.textContent = parts.join(" · ");
  entry.meta.hidden = parts.length === 0;
}

function failEntry(entry, failure) {
  setEntryState(entry, "invalid", "Failed");
  entry.body.replaceChildren();
  const message = document.createElement("p");
  message.className = "answer-error";
  message.append(describeFailure(failure));
  if (failure.displayCode) {
    const code = document.createElement("code");
    code.className = "error-code";
    code.textContent = failure.displayCode;
    message.append(" ", code);
  }
  entry.body.append(message);
  if (entry.requestId) {
    entry.meta.textContent = `Request id: ${entry.requestId}`;
    entry.meta.hidden = false;
  }
}

function applyHubEvent(entry, kind, payload) {
  waitingEntries.delete(entry.requestId);
  if (kind === "completed") {
    completeEntry(entry, payload);
  } else {
    failEntry(entry, {
      code: payload.code,
      displayCode: payload.code,
      message: payload.message,
      retryAfterSeconds: payload.retryAfterSeconds ?? null,
    });
  }
}

function handleHubEvent(kind, payload) {
  const requestId = typeof payload?.requestId === "string" ? payload.requestId.toLowerCase() : null;
  if (!requestId) {
    return;
  }
  const entry = waitingEntries.get(requestId);
  if (entry) {
    applyHubEvent(entry, kind, payload);
    return;
  }
  if (unmatchedEvents.size >= MAX_UNMATCHED_EVENTS) {
    unmatchedEvents.delete(unmatchedEvents.keys().next().value);
  }
  unmatchedEvents.set(requestId, { kind, payload });
}

// Ingress sends results to the user rather than to one connection, so a result sent after a reconnect,
// or after a new session for the same user, still arrives. SignalR keeps nothing for a user with no open
// connection, so a result sent during the gap is lost and the page cannot tell which case happened.
function markWaitingEntriesInterrupted(text, { connectionLost = false } = {}) {
  for (const entry of waitingEntries.values()) {
    if (connectionLost) {
      setEntryState(entry, "unknown", "Connection lost");
    }
    for (const oldNote of entry.body.querySelectorAll(".answer-note")) {
      oldNote.remove();
    }
    const note = document.createElement("p");
    note.className = "answer-note";
    note.textContent = text;
    entry.body.append(note);
  }
}

function isSessionExpired() {
  return Boolean(session?.expiresAt) && Date.parse(session.expiresAt) <= Date.now();
}

/** Returns why a prompt cannot be sent now, or null when it can. */
function findSendBlocker() {
  if (!session) {
    return "Start a session first: fill in the host session fields and select Start session.";
  }
  if (isSessionExpired()) {
    return "The session token has expired. Select Start session to get a new one.";
  }
  if (!connection || connection.state !== signalR.HubConnectionState.Connected) {
    return (
      "The prompt was not sent because the live connection is not open. " +
      "Wait until the indicator shows Connected, or select Start session again."
    );
  }
  return null;
}

async function sendPrompt() {
  clearFieldError(elements.promptError, [elements.prompt]);
  const text = elements.prompt.value;
  if (text.trim() === "") {
    showFieldError(elements.promptError, [elements.prompt], "Enter a prompt before sending.");
    elements.prompt.focus();
    return;
  }
  const blocker = findSendBlocker();
  if (blocker) {
    showFieldError(elements.promptError, [], blocker);
    return;
  }

  const entry = createEntry(text);
  elements.sendButton.disabled = true;
  try {
    const { data } = await requestJson("POST", "/api/prompts", {
      authorization: `Bearer ${session.token}`,
      body: { prompt: text },
    });
    const requestId = typeof data?.requestId === "string" ? data.requestId.toLowerCase() : null;
    if (!requestId) {
      failEntry(entry, {
        code: null,
        displayCode: null,
        message: "The server accepted the prompt but returned no request id.",
      });
      return;
    }
    entry.requestId = requestId;
    setEntryState(entry, "pending", "Waiting for answer…");
    elements.prompt.value = "";

    const early = unmatchedEvents.get(requestId);
    if (early) {
      unmatchedEvents.delete(requestId);
      applyHubEvent(entry, early.kind, early.payload);
    } else {
      waitingEntries.set(requestId, entry);
      // The connection may have closed while the POST was in flight.
      if (!connection || connection.state === signalR.HubConnectionState.Disconnected) {
        markWaitingEntriesInterrupted(CLOSED_WHILE_WAITING_MESSAGE, { connectionLost: true });
      }
    }
  } catch (error) {
    failEntry(entry, {
      code: error.code,
      displayCode: error.displayCode,
      message: error.message,
      retryAfterSeconds: error.retryAfterSeconds,
    });
  } finally {
    elements.sendButton.disabled = false;
    elements.prompt.focus();
  }
}

// --- Wiring ---

elements.sessionForm.addEventListener("submit", (event) => {
  event.preventDefault();
  startSession();
});

elements.endSessionButton.addEventListener("click", async () => {
  await endSession();
  elements.startSessionButton.focus();
});

elements.promptForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendPrompt();
});

elements.prompt.addEventListener("keydown", (event) => {
  // Cmd+Enter is the macOS equivalent of Ctrl+Enter.
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    elements.promptForm.requestSubmit();
  }
});

const stored = loadCredentials();
if (stored) {
  elements.appId.value = stored.appId;
  elements.appSecret.value = stored.appSecret;
  elements.userId.value = stored.userId;
}
if (typeof signalR === "undefined") {
  setConnectionState("disconnected", SIGNALR_MISSING_MESSAGE);
}
