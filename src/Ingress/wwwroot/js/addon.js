// Add-on demo. The host part gets an end-user token from the host's backend (POST /demo/token) and renews it
// before it expires. The add-on part talks to /hubs/addon: SendPrompt and CancelPrompt go up; PromptPiece,
// PromptCompleted and PromptFailed come down and are matched to the conversation by requestId. After a
// reconnect, answers still on their way are fetched from GET /api/prompts/{requestId}.
// The global `signalR` comes from /lib/signalr/signalr.min.js, which the build copies from npm.
import { clearFieldError, formatTime, requestJson, showFieldError } from "./common.js";

const HUB_URL = "/hubs/addon";
const TOKEN_URL = "/demo/token";
const USER_STORAGE_KEY = "addonevents.demoUserId";

// Delays between reconnect attempts; the last one repeats for as long as the session lasts.
const RECONNECT_DELAYS_MS = [0, 1000, 2000, 4000, 8000];

// A token is renewed a minute before it expires, or with a fifth of its life left when it lives under five
// minutes. A connection that starts within a few seconds of the expiry waits for a renewal first.
const TOKEN_RENEW_MARGIN_MS = 60_000;
const TOKEN_RENEW_MINIMUM_MS = 5_000;
const TOKEN_EXPIRY_GUARD_MS = 10_000;
const TOKEN_RETRY_MS = 15_000;

// Hub events for requests this page does not know yet: the server can be faster than the SendPrompt result,
// and another tab of the same user receives events too. The cap bounds the second kind.
const MAX_BUFFERED_REQUESTS = 100;

const SIGNALR_MISSING_MESSAGE =
  "The SignalR client (/lib/signalr/signalr.min.js) did not load. Run npm ci in src/Ingress and build the " +
  "Ingress project, which copies the file into wwwroot.";

const NO_DEMO_BACKEND_MESSAGE =
  "This server has no demo host backend. Start AddOnEvents with run.sh, which creates a demo app and sets " +
  "Demo:AppId and Demo:AppSecret for Ingress.";

/** What each stable error code means for the person using the add-on. */
const FAILURE_SENTENCES = {
  no_key_configured:
    "The assistant is not set up yet: this app has no OpenAI key. The app's developer adds one in the developer console.",
  key_invalid: "OpenAI rejected this app's key. The app's developer must save a valid key in the developer console.",
  key_unreadable: "This app's stored key could not be read. The app's developer must save the key again.",
  upstream_auth_failed:
    "OpenAI rejected this app's key for this request. The app's developer must replace it in the developer console.",
  upstream_rate_limited: (failure) =>
    `OpenAI is receiving too many requests from this app. ${retryLater(failure, "Wait a moment and try again.")}`,
  rate_limited: (failure) => `You are sending prompts too quickly. ${retryLater(failure, "Wait a moment and try again.")}`,
  quota_exceeded: "This app has used up its allowance. Contact the app's developer.",
  upstream_unavailable: "OpenAI could not be reached or had a server error. Try again in a minute.",
  upstream_timeout: "OpenAI did not answer in time. Try again, or ask a shorter question.",
  upstream_bad_request: "OpenAI did not accept this request. Rephrase the question and try again.",
  upstream_invalid_response: "OpenAI sent an answer that could not be read. Try again.",
  model_not_found: "The model this app asks for is not available with its OpenAI key.",
  content_filtered: "OpenAI's content filter stopped this answer. Rephrase the question and try again.",
  refused: "The model declined to answer this question.",
  prompt_too_long: "The question is too long. Shorten it and send it again.",
  invalid_request: "The question was not accepted. Check that it is not empty.",
  request_expired: "The question waited too long to be answered. Send it again.",
  unauthorized: "Your session has expired. Select Switch user and start a new session.",
  forbidden: "You may not use the assistant in this app. Contact the app's developer.",
  addon_inactive: "The assistant is switched off for this app. Contact the app's developer.",
  service_unavailable: "The assistant is briefly unavailable. Try again in a few seconds.",
  internal_error: "Something went wrong inside the assistant. Try again; if it keeps failing, contact the app's developer.",
  connection_lost: "The connection dropped while the question was being sent, so it may not have arrived. Send it again.",
  network_error: "The server could not be reached. Check your connection and try again.",
};

const FINISH_REASONS = {
  length: "The answer was cut off at the length limit.",
  content_filter: "The answer was cut short by the content filter.",
};

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  disconnected: "Not connected",
};

const elements = {
  sessionForm: document.getElementById("session-form"),
  userId: document.getElementById("user-id"),
  userIdError: document.getElementById("user-id-error"),
  startSessionButton: document.getElementById("start-session-button"),
  sessionActive: document.getElementById("session-active"),
  sessionUser: document.getElementById("session-user"),
  sessionInfo: document.getElementById("session-info"),
  sessionWarning: document.getElementById("session-warning"),
  endSessionButton: document.getElementById("end-session-button"),
  connectionDot: document.getElementById("connection-dot"),
  connectionText: document.getElementById("connection-text"),
  connectionDetail: document.getElementById("connection-detail"),
  conversationEmpty: document.getElementById("conversation-empty"),
  conversationEmptyText: document.getElementById("conversation-empty-text"),
  conversation: document.getElementById("conversation"),
  promptForm: document.getElementById("prompt-form"),
  prompt: document.getElementById("prompt"),
  promptError: document.getElementById("prompt-error"),
  sendButton: document.getElementById("send-button"),
  stopButton: document.getElementById("stop-button"),
  announcer: document.getElementById("announcer"),
};

/** {userId, token, expiresAt (ms), renewTimer} of the signed-in end user, or null. */
let session = null;
let tokenRenewal = null;
let connection = null;
/** The answer being written, which Stop and Esc act on; null when none is. */
let activeEntry = null;

/** Conversation entries by lower-case requestId, finished ones included so that late events are ignored. */
const entries = new Map();
/** Hub events that arrived before their request id was known, by lower-case requestId. */
const bufferedEvents = new Map();

// --- Small helpers ---

function retryLater(failure, fallback) {
  const seconds = failure.retryAfterSeconds;
  if (typeof seconds === "number" && seconds > 0) {
    return `Try again in ${seconds === 1 ? "1 second" : `${seconds} seconds`}.`;
  }
  return fallback;
}

function describeFailure(failure) {
  const sentence = FAILURE_SENTENCES[failure.code];
  if (typeof sentence === "function") {
    return sentence(failure);
  }
  return sentence ?? (failure.message || "The assistant could not answer, and the server gave no reason.");
}

function normalizeId(value) {
  return typeof value === "string" && value !== "" ? value.toLowerCase() : null;
}

function delay(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

let announceTimer = null;

/** Reads a sentence out once through the polite live region. */
function announce(text) {
  elements.announcer.textContent = "";
  clearTimeout(announceTimer);
  // Clearing first and writing a moment later makes screen readers repeat an identical sentence.
  announceTimer = setTimeout(() => {
    elements.announcer.textContent = text;
  }, 100);
}

// --- Connection indicator ---

function setConnectionState(state, detail = null) {
  elements.connectionDot.className = `connection-dot connection-${state}`;
  elements.connectionText.textContent = CONNECTION_LABELS[state];
  elements.connectionDetail.textContent = detail ?? "";
  elements.connectionDetail.hidden = !detail;
  elements.connectionDetail.dataset.state = state;
  document.body.dataset.connection = state;
}

// --- Session and token (the host's part) ---

/** Asks the host's backend for a token for userId; throws ApiError. */
async function requestToken(userId) {
  let response;
  try {
    response = await requestJson("POST", TOKEN_URL, { body: { userId } });
  } catch (error) {
    if (error.status === 404 || error.status === 405) {
      error.message = NO_DEMO_BACKEND_MESSAGE;
    }
    throw error;
  }
  const data = response.data ?? {};
  const expiresAt = Date.parse(data.expiresAt);
  if (typeof data.token !== "string" || data.token === "" || Number.isNaN(expiresAt)) {
    throw new Error("The host's backend answered without a usable token.");
  }
  return { token: data.token, expiresAt };
}

function describeSession() {
  elements.sessionUser.textContent = session.userId;
  elements.sessionInfo.textContent =
    `The session renews itself. Current token valid until ${formatTime(new Date(session.expiresAt))}.`;
}

function scheduleRenewal(afterMs) {
  clearTimeout(session.renewTimer);
  const owner = session;
  session.renewTimer = setTimeout(() => {
    if (session === owner) {
      renewToken().catch(() => {});
    }
  }, afterMs);
}

function renewAfter(expiresAt) {
  const remaining = expiresAt - Date.now();
  return Math.max(TOKEN_RENEW_MINIMUM_MS, remaining - Math.min(TOKEN_RENEW_MARGIN_MS, remaining * 0.2));
}

/** Fetches a new token for the current user; one renewal at a time. Rejects when the host refuses. */
function renewToken() {
  if (tokenRenewal) {
    return tokenRenewal;
  }
  const owner = session;
  tokenRenewal = (async () => {
    try {
      const fresh = await requestToken(owner.userId);
      if (session !== owner) {
        return;
      }
      owner.token = fresh.token;
      owner.expiresAt = fresh.expiresAt;
      clearFieldError(elements.sessionWarning);
      describeSession();
      scheduleRenewal(renewAfter(fresh.expiresAt));
    } catch (error) {
      if (session === owner) {
        const expired = owner.expiresAt <= Date.now();
        showFieldError(
          elements.sessionWarning,
          [],
          `Could not renew the session${expired ? ", and the current token has expired" : ""}: ${error.message} ` +
            `Trying again in ${TOKEN_RETRY_MS / 1000} seconds.`,
        );
        scheduleRenewal(TOKEN_RETRY_MS);
      }
      throw error;
    } finally {
      tokenRenewal = null;
    }
  })();
  return tokenRenewal;
}

/** Returns a token that is valid for a while yet, renewing it first when it is about to expire. */
async function currentToken() {
  if (!session) {
    throw new Error("No session.");
  }
  if (session.expiresAt - Date.now() < TOKEN_EXPIRY_GUARD_MS) {
    await renewToken();
  }
  return session.token;
}

async function startSession(userId) {
  clearFieldError(elements.userIdError, [elements.userId]);
  if (typeof signalR === "undefined") {
    showFieldError(elements.userIdError, [], SIGNALR_MISSING_MESSAGE);
    return;
  }
  elements.startSessionButton.disabled = true;
  let issued;
  try {
    issued = await requestToken(userId);
  } catch (error) {
    const inputs = error.code === "invalid_request" ? [elements.userId] : [];
    showFieldError(elements.userIdError, inputs, error.message, error.displayCode);
    elements.userId.focus();
    return;
  } finally {
    elements.startSessionButton.disabled = false;
  }

  sessionStorage.setItem(USER_STORAGE_KEY, userId);
  session = { userId, token: issued.token, expiresAt: issued.expiresAt, renewTimer: null };
  describeSession();
  scheduleRenewal(renewAfter(issued.expiresAt));
  elements.sessionForm.hidden = true;
  elements.sessionActive.hidden = false;
  clearFieldError(elements.sessionWarning);
  elements.conversationEmptyText.textContent = "Ask a question below. Answers appear here as they are written.";
  updateComposer();
  await connect();
}

async function endSession() {
  const hub = connection;
  connection = null;
  if (session) {
    clearTimeout(session.renewTimer);
  }
  session = null;
  if (activeEntry) {
    stopEntry(activeEntry);
  }
  elements.sessionActive.hidden = true;
  elements.sessionForm.hidden = false;
  elements.conversationEmptyText.textContent = "Start a session to ask the assistant.";
  setConnectionState("disconnected");
  updateComposer();
  if (hub) {
    await hub.stop();
  }
}

// --- Hub connection (the add-on's part) ---

function buildConnection() {
  const hub = new signalR.HubConnectionBuilder()
    .withUrl(HUB_URL, { accessTokenFactory: () => currentToken() })
    .withAutomaticReconnect({
      nextRetryDelayInMilliseconds: (context) =>
        RECONNECT_DELAYS_MS[Math.min(context.previousRetryCount, RECONNECT_DELAYS_MS.length - 1)],
    })
    .configureLogging(signalR.LogLevel.Warning)
    .build();

  hub.on("PromptPiece", (payload) => dispatch("piece", payload));
  hub.on("PromptCompleted", (payload) => dispatch("completed", payload));
  hub.on("PromptFailed", (payload) => dispatch("failed", payload));

  // Each callback checks that its connection is still the current one, so a stopped old one changes nothing.
  hub.onreconnecting(() => {
    if (hub !== connection) return;
    setConnectionState(
      "reconnecting",
      "The connection dropped. Reconnecting… Answers on their way are picked up when it is back.",
    );
    for (const entry of pendingEntries()) {
      setEntryNote(entry, "Connection lost. Waiting to reconnect…");
    }
    updateComposer();
  });
  hub.onreconnected(() => {
    if (hub !== connection) return;
    setConnectionState("connected");
    announce("Connection restored.");
    updateComposer();
    recoverPendingAnswers();
  });
  hub.onclose(() => {
    if (hub !== connection) return;
    // Reconnecting never gives up, so this is a close the server asked for; open a fresh connection.
    connectWithRetry(hub, { reconnect: true });
  });
  return hub;
}

async function connect() {
  const hub = buildConnection();
  connection = hub;
  await connectWithRetry(hub);
}

/** Starts hub, retrying with growing pauses while it is still the page's connection. */
async function connectWithRetry(hub, { reconnect = false } = {}) {
  for (let attempt = 0; hub === connection; attempt++) {
    if (attempt === 0 && !reconnect) {
      setConnectionState("connecting");
    } else {
      setConnectionState("reconnecting", "The connection dropped. Reconnecting…");
    }
    updateComposer();
    try {
      await hub.start();
    } catch (error) {
      if (hub !== connection) return;
      const pause = RECONNECT_DELAYS_MS[Math.min(attempt + 1, RECONNECT_DELAYS_MS.length - 1)];
      setConnectionState(
        "disconnected",
        `Could not connect (${error.message}). Trying again in ${Math.max(1, Math.round(pause / 1000))} s.`,
      );
      await delay(pause);
      continue;
    }
    if (hub !== connection) return;
    setConnectionState("connected");
    updateComposer();
    if (reconnect || attempt > 0) {
      recoverPendingAnswers();
    }
    return;
  }
}

function isConnected() {
  return connection !== null && connection.state === signalR.HubConnectionState.Connected;
}

/** Asks the server for answers that were on their way while the connection was down. */
async function recoverPendingAnswers() {
  for (const entry of pendingEntries()) {
    if (!entry.requestId) {
      continue;
    }
    let result;
    try {
      const token = await currentToken();
      result = (await requestJson("GET", `/api/prompts/${encodeURIComponent(entry.requestId)}`, {
        authorization: `Bearer ${token}`,
      })).data;
    } catch (error) {
      if (isFinal(entry)) continue;
      const note =
        error.status === 404
          ? "The connection dropped while this answer was on its way, and the server kept no copy. " +
            "If it does not appear soon, stop it and send the question again."
          : `The answer could not be fetched after the reconnect (${error.message}). It still appears if the server sends it.`;
      setEntryNote(entry, note);
      continue;
    }
    if (isFinal(entry) || !result) continue;
    if (result.status === "completed") {
      completeEntry(entry, result);
    } else if (result.status === "failed") {
      failEntry(entry, { code: result.code, message: result.message, retryAfterSeconds: result.retryAfterSeconds });
    } else {
      setEntryNote(entry, null);
    }
  }
}

// --- Conversation ---

function isFinal(entry) {
  return entry.state === "answered" || entry.state === "failed" || entry.state === "stopped";
}

function pendingEntries() {
  const pending = [];
  for (const entry of entries.values()) {
    if (!isFinal(entry)) pending.push(entry);
  }
  if (activeEntry && !activeEntry.requestId && !isFinal(activeEntry)) {
    pending.push(activeEntry);
  }
  return pending;
}

const ENTRY_BADGES = {
  sending: ["pending", "Sending…"],
  waiting: ["pending", "Thinking…"],
  streaming: ["pending", "Writing…"],
  answered: ["active", "Answered"],
  failed: ["invalid", "Failed"],
  stopped: ["unknown", "Stopped"],
};

function createEntry(promptText) {
  const item = document.createElement("li");
  item.className = "turn";

  const question = document.createElement("div");
  question.className = "turn-question";
  const questionLabel = document.createElement("span");
  questionLabel.className = "visually-hidden";
  questionLabel.textContent = "You asked: ";
  const questionText = document.createElement("p");
  questionText.append(questionLabel, promptText);
  question.append(questionText);

  const answer = document.createElement("article");
  answer.className = "turn-answer";
  answer.setAttribute("aria-label", "Answer");
  const header = document.createElement("div");
  header.className = "turn-answer-header";
  const name = document.createElement("span");
  name.className = "turn-author";
  name.textContent = "Assistant";
  const badge = document.createElement("span");
  const time = document.createElement("time");
  const now = new Date();
  time.dateTime = now.toISOString();
  time.textContent = formatTime(now);
  header.append(name, " ", badge, " ", time);

  const text = document.createElement("div");
  text.className = "answer-text";
  text.hidden = true;
  const error = document.createElement("p");
  error.className = "answer-error";
  error.hidden = true;
  const note = document.createElement("p");
  note.className = "answer-note";
  note.hidden = true;
  const meta = document.createElement("p");
  meta.className = "answer-meta";
  meta.hidden = true;
  answer.append(header, text, error, note, meta);

  item.append(question, answer);
  elements.conversation.append(item);
  elements.conversationEmpty.hidden = true;

  const entry = {
    item,
    answer,
    badge,
    textElement: text,
    errorElement: error,
    noteElement: note,
    metaElement: meta,
    requestId: null,
    state: "sending",
    text: "",
    nextSequence: 0,
    heldPieces: new Map(),
  };
  setEntryState(entry, "sending");
  item.scrollIntoView({ block: "nearest" });
  return entry;
}

function setEntryState(entry, state) {
  entry.state = state;
  const [badgeState, label] = ENTRY_BADGES[state];
  entry.badge.className = `badge badge-${badgeState}`;
  entry.badge.textContent = label;
  entry.item.dataset.state = state;
  entry.answer.setAttribute("aria-busy", String(!isFinal(entry)));
  entry.textElement.classList.toggle("is-streaming", state === "streaming");
  if (isFinal(entry)) {
    if (entry === activeEntry) {
      activeEntry = null;
    }
    setEntryNote(entry, null);
  }
  updateComposer();
}

function setEntryNote(entry, text) {
  entry.noteElement.textContent = text ?? "";
  entry.noteElement.hidden = !text;
}

function renderText(entry) {
  entry.textElement.textContent = entry.text;
  entry.textElement.hidden = entry.text === "";
}

/** Appends pieces in sequence order; a piece seen before, or older than the text shown, is a duplicate. */
function applyPiece(entry, payload) {
  const sequence = payload.sequence;
  if (!Number.isInteger(sequence) || sequence < entry.nextSequence || entry.heldPieces.has(sequence)) {
    return;
  }
  entry.heldPieces.set(sequence, typeof payload.text === "string" ? payload.text : "");
  while (entry.heldPieces.has(entry.nextSequence)) {
    entry.text += entry.heldPieces.get(entry.nextSequence);
    entry.heldPieces.delete(entry.nextSequence);
    entry.nextSequence++;
  }
  if (entry.state !== "streaming") {
    setEntryState(entry, "streaming");
  }
  setEntryNote(entry, null);
  renderText(entry);
}

function formatUsage(usage) {
  if (!usage) return null;
  const number = (value) => (typeof value === "number" ? value.toLocaleString() : "?");
  return `${number(usage.totalTokens)} tokens (${number(usage.promptTokens)} in, ${number(usage.completionTokens)} out)`;
}

function completeEntry(entry, payload) {
  entry.text = typeof payload.text === "string" ? payload.text : entry.text;
  renderText(entry);
  if (entry.text === "") {
    entry.textElement.textContent = "The assistant returned an empty answer.";
    entry.textElement.hidden = false;
  }
  const parts = [];
  const usage = formatUsage(payload.usage);
  if (usage) parts.push(usage);
  if (FINISH_REASONS[payload.finishReason]) parts.push(FINISH_REASONS[payload.finishReason]);
  entry.metaElement.textContent = parts.join(" · ");
  entry.metaElement.hidden = parts.length === 0;
  setEntryState(entry, "answered");
  announce(`Answer complete${usage ? `, ${usage}` : ""}.`);
}

function failEntry(entry, failure) {
  if (failure.code === "cancelled") {
    stopEntry(entry);
    return;
  }
  entry.errorElement.replaceChildren(describeFailure(failure));
  if (failure.code) {
    const code = document.createElement("code");
    code.className = "error-code";
    code.textContent = failure.code;
    entry.errorElement.append(" ", code);
  }
  entry.errorElement.hidden = false;
  entry.textElement.classList.add("is-partial");
  setEntryState(entry, "failed");
  announce(`The assistant could not answer. ${describeFailure(failure)}`);
}

/** Ends an entry at once on this page; the server is told separately. Later events for it are ignored. */
function stopEntry(entry) {
  if (isFinal(entry)) return;
  entry.metaElement.textContent = entry.text === "" ? "Stopped before the answer began." : "Stopped. The answer above is incomplete.";
  entry.metaElement.hidden = false;
  entry.textElement.classList.add("is-partial");
  setEntryState(entry, "stopped");
  announce("Answer stopped.");
}

/** Routes a hub event to its entry, or holds it until SendPrompt has returned that request id. */
function dispatch(kind, payload) {
  const requestId = normalizeId(payload?.requestId);
  if (!requestId) return;
  const entry = entries.get(requestId);
  if (!entry) {
    if (!bufferedEvents.has(requestId)) {
      if (bufferedEvents.size >= MAX_BUFFERED_REQUESTS) {
        bufferedEvents.delete(bufferedEvents.keys().next().value);
      }
      bufferedEvents.set(requestId, []);
    }
    bufferedEvents.get(requestId).push([kind, payload]);
    return;
  }
  applyEvent(entry, kind, payload);
}

function applyEvent(entry, kind, payload) {
  if (isFinal(entry)) return;
  if (kind === "piece") {
    applyPiece(entry, payload);
  } else if (kind === "completed") {
    completeEntry(entry, payload);
  } else {
    failEntry(entry, {
      code: typeof payload.code === "string" ? payload.code : null,
      message: payload.message,
      retryAfterSeconds: payload.retryAfterSeconds ?? null,
    });
  }
}

/** Turns a rejected hub invocation into {code, message}. The server's HubException text is "code: message". */
function hubFailure(error) {
  const text = String(error?.message ?? "");
  const match = /(?:^|HubException: )([a-z][a-z0-9_]*): ([\s\S]+)$/.exec(text);
  if (match) {
    return { code: match[1], message: match[2] };
  }
  if (/connection|disconnected/i.test(text)) {
    return { code: "connection_lost", message: text };
  }
  return { code: null, message: text };
}

/** Returns why a question cannot be sent now, or null when it can. */
function sendBlocker() {
  if (!session) return "Start a session first: enter an end-user id under Host session.";
  if (activeEntry) return "Wait for the current answer, or stop it with Stop or Esc.";
  if (!isConnected()) return "The assistant is not connected yet. Wait until the indicator shows Connected.";
  return null;
}

function updateComposer() {
  elements.stopButton.disabled = activeEntry === null;
  elements.sendButton.disabled = !session || activeEntry !== null || !isConnected();
  elements.prompt.disabled = !session;
}

async function sendPrompt() {
  clearFieldError(elements.promptError, [elements.prompt]);
  const text = elements.prompt.value;
  if (text.trim() === "") {
    showFieldError(elements.promptError, [elements.prompt], "Type a question first.");
    elements.prompt.focus();
    return;
  }
  const blocker = sendBlocker();
  if (blocker) {
    showFieldError(elements.promptError, [], blocker);
    return;
  }

  const entry = createEntry(text);
  activeEntry = entry;
  elements.prompt.value = "";
  updateComposer();
  elements.prompt.focus();

  let requestId;
  try {
    requestId = normalizeId(String(await connection.invoke("SendPrompt", { prompt: text, stream: true })));
  } catch (error) {
    if (entry.state === "stopped") return;
    const failure = hubFailure(error);
    failEntry(entry, failure);
    if (failure.code === "prompt_too_long" || failure.code === "invalid_request") {
      elements.prompt.value = text;
    }
    return;
  }

  entry.requestId = requestId;
  if (entry.state === "stopped") {
    cancelOnServer(requestId);
    return;
  }
  entries.set(requestId, entry);
  setEntryState(entry, "waiting");
  const early = bufferedEvents.get(requestId);
  bufferedEvents.delete(requestId);
  for (const [kind, payload] of early ?? []) {
    applyEvent(entry, kind, payload);
  }
}

function cancelOnServer(requestId) {
  if (!isConnected()) return;
  // A server without CancelPrompt rejects the call; the answer is already hidden here, so that is fine.
  connection.invoke("CancelPrompt", requestId).catch(() => {});
}

function stopActive() {
  const entry = activeEntry;
  if (!entry) return;
  stopEntry(entry);
  if (entry.requestId) {
    cancelOnServer(entry.requestId);
  }
  elements.prompt.focus();
}

// --- Wiring ---

elements.sessionForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = elements.userId.value.trim();
  if (userId === "") {
    showFieldError(elements.userIdError, [elements.userId], "Enter an end-user id, for example u-123.");
    elements.userId.focus();
    return;
  }
  startSession(userId).then(() => {
    if (session) elements.prompt.focus();
  });
});

elements.endSessionButton.addEventListener("click", async () => {
  await endSession();
  elements.userId.focus();
});

elements.promptForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendPrompt();
});

elements.stopButton.addEventListener("click", stopActive);

elements.prompt.addEventListener("keydown", (event) => {
  // Cmd+Enter is the macOS form of Ctrl+Enter.
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    elements.promptForm.requestSubmit();
  }
});

document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && activeEntry) {
    event.preventDefault();
    stopActive();
  }
});

setConnectionState("disconnected");
updateComposer();
if (typeof signalR === "undefined") {
  setConnectionState("disconnected", SIGNALR_MISSING_MESSAGE);
} else {
  const rememberedUser = sessionStorage.getItem(USER_STORAGE_KEY);
  if (rememberedUser) {
    elements.userId.value = rememberedUser;
    startSession(rememberedUser);
  }
}
