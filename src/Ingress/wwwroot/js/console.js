// Developer console: signs in with an app id and secret, then saves, replaces and deletes the app's OpenAI key
// through /api/apps/{appId}/openai-key and keeps its status up to date by polling.
import {
  basicAuthorization,
  clearCredentials,
  clearFieldError,
  formatRelative,
  formatTimestamp,
  loadCredentials,
  requestJson,
  saveCredentials,
  showFieldError,
} from "./common.js";

// The status is read every second while a key is being checked, and every few seconds otherwise, so a key
// that OpenAI starts rejecting later shows up without a reload.
const PENDING_POLL_MS = 1000;
const IDLE_POLL_MS = 10_000;
const ERROR_POLL_MS = 5000;

const STATE_LABELS = {
  pending: "Checking",
  active: "Active",
  invalid: "Invalid",
  unverified: "Unverified",
};

const STATE_DESCRIPTIONS = {
  pending: "The key is being checked with OpenAI. This takes a few seconds.",
  active: "OpenAI accepted this key. The add-on answers with it.",
  invalid: "OpenAI rejected this key. The add-on cannot answer until you save a valid key.",
  unverified: "The key is saved, but OpenAI could not be asked about it yet. The add-on uses it meanwhile.",
};

const REASON_DESCRIPTIONS = {
  key_invalid: "OpenAI says the key is wrong or has been revoked.",
  upstream_auth_failed: "OpenAI refused the key: it is wrong, revoked, or lacks access. Check it in your OpenAI account.",
  upstream_unavailable: "OpenAI could not be reached during the check. The check is repeated a few times over the next minutes.",
  upstream_timeout: "OpenAI did not answer in time during the check. The check is repeated a few times over the next minutes.",
  upstream_rate_limited:
    "OpenAI limited the rate of requests during the check. The check is repeated a few times over the next minutes.",
  key_check_abandoned:
    "OpenAI could not be reached in any of the repeated checks, so the key is no longer checked. Save the key again to check it again.",
  upstream_invalid_response: "OpenAI's answer to the check could not be read.",
  upstream_bad_request: "OpenAI rejected the check request.",
  key_unreadable: "The saved key could not be decrypted. Save the key again.",
  internal_error: "The key check failed inside AddOnEvents. Save the key again, or try later.",
};

const elements = {
  signInCard: document.getElementById("sign-in-card"),
  signInForm: document.getElementById("sign-in-form"),
  appId: document.getElementById("app-id"),
  appSecret: document.getElementById("app-secret"),
  signInError: document.getElementById("sign-in-error"),
  signInButton: document.getElementById("sign-in-button"),
  signOutButton: document.getElementById("sign-out-button"),
  appArea: document.getElementById("app-area"),
  signedInApp: document.getElementById("signed-in-app"),
  keyHeading: document.getElementById("key-heading"),
  keyForm: document.getElementById("key-form"),
  apiKey: document.getElementById("api-key"),
  apiKeyLabel: document.getElementById("api-key-label"),
  apiKeyError: document.getElementById("api-key-error"),
  saveKeyButton: document.getElementById("save-key-button"),
  deleteKeyButton: document.getElementById("delete-key-button"),
  deleteConfirm: document.getElementById("delete-confirm"),
  deleteConfirmButton: document.getElementById("delete-confirm-button"),
  deleteCancelButton: document.getElementById("delete-cancel-button"),
  deleteKeyError: document.getElementById("delete-key-error"),
  refreshButton: document.getElementById("refresh-button"),
  statusEmpty: document.getElementById("status-empty"),
  statusDetails: document.getElementById("status-details"),
  statusState: document.getElementById("status-state"),
  statusStateDescription: document.getElementById("status-state-description"),
  statusReason: document.getElementById("status-reason"),
  statusHint: document.getElementById("status-hint"),
  statusVersion: document.getElementById("status-version"),
  statusCheckedAt: document.getElementById("status-checked-at"),
  statusProgress: document.getElementById("status-progress"),
  statusProgressText: document.getElementById("status-progress-text"),
  statusError: document.getElementById("status-error"),
  announcer: document.getElementById("announcer"),
};

/** The signed-in app, or null. Set only after the server accepted the credentials. */
let session = null;
/** The last status shown: undefined before the first read, null when the app has no key. */
let shownStatus;
/** The version saved last on this page; an older version in a status predates the save. */
let savedVersion = null;
let pollTimer = null;
// Incremented whenever a newer read supersedes the running one: sign-out, save, delete, Check now.
let readGeneration = 0;

function keyUrl(appId) {
  return `/api/apps/${encodeURIComponent(appId)}/openai-key`;
}

function authorization() {
  return basicAuthorization(session.appId, session.appSecret);
}

/** Fetches the key status, or returns null when the app has no key (404 no_key_configured). */
async function fetchKeyStatus(credentials) {
  try {
    const { data } = await requestJson("GET", keyUrl(credentials.appId), {
      authorization: basicAuthorization(credentials.appId, credentials.appSecret),
    });
    return data;
  } catch (error) {
    if (error.status === 404 && error.code === "no_key_configured") {
      return null;
    }
    throw error;
  }
}

function isCredentialError(error) {
  return error.status === 401 || error.status === 403;
}

let announceTimer = null;

function announce(text) {
  elements.announcer.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(() => {
    elements.announcer.textContent = text;
  }, 100);
}

/**
 * Shows an error next to the field that caused it. Rejected credentials (the secret may have been rotated
 * since sign-in) sign the developer out and show the error on the sign-in form.
 */
function showError(error, errorElement, inputs = []) {
  if (isCredentialError(error)) {
    signOut();
    showFieldError(
      elements.signInError,
      [elements.appId, elements.appSecret],
      "The app id or app secret is no longer accepted. Sign in again.",
      error.displayCode,
    );
    elements.appSecret.focus();
    return;
  }
  showFieldError(errorElement, inputs, error.message, error.displayCode);
}

function clearKeyErrors() {
  clearFieldError(elements.apiKeyError, [elements.apiKey]);
  clearFieldError(elements.deleteKeyError);
  clearFieldError(elements.statusError);
}

function setBusy(isBusy) {
  for (const button of [elements.saveKeyButton, elements.deleteKeyButton, elements.deleteConfirmButton, elements.refreshButton]) {
    button.disabled = isBusy;
  }
}

function showSignedIn(isSignedIn) {
  elements.signInCard.hidden = isSignedIn;
  elements.appArea.hidden = !isSignedIn;
  elements.signedInApp.textContent = isSignedIn ? session.appId : "";
}

function isPending(status) {
  return (
    status !== null &&
    status !== undefined &&
    (status.state === "pending" ||
      (typeof savedVersion === "number" && typeof status.version === "number" && status.version < savedVersion))
  );
}

function renderStatus(status) {
  const previous = shownStatus;
  shownStatus = status;
  const hasKey = status !== null;
  elements.statusEmpty.hidden = hasKey;
  elements.statusDetails.hidden = !hasKey;
  elements.deleteKeyButton.hidden = !hasKey;
  elements.apiKeyLabel.textContent = hasKey ? "Replace the key" : "Save a key";
  elements.saveKeyButton.textContent = hasKey ? "Replace key" : "Save key";
  if (!hasKey) {
    hideDeleteConfirm();
  }

  const pending = isPending(status);
  elements.statusProgress.hidden = !pending;
  elements.statusProgressText.textContent = pending ? "Checking the key with OpenAI…" : "";

  if (hasKey) {
    // While a newer key is being checked, an older status still says how the previous key did.
    const state = pending ? "pending" : typeof status.state === "string" ? status.state : "unknown";
    elements.statusState.className = `badge badge-lg badge-${STATE_LABELS[state] ? state : "unknown"}`;
    elements.statusState.textContent = STATE_LABELS[state] ?? state;
    elements.statusStateDescription.textContent = describeState(state, status);
    elements.statusHint.textContent = status.hint || "—";
    elements.statusVersion.textContent = formatVersion(status);
    renderReason(pending ? null : status.reasonCode);
    renderCheckedAt(status.checkedAt);
  }

  const before = describeForAnnouncement(previous);
  const after = describeForAnnouncement(status);
  if (previous !== undefined && before !== after) {
    announce(after);
  }
}

function describeForAnnouncement(status) {
  if (status === undefined) return "";
  if (status === null) return "No key is saved for this app.";
  const state = isPending(status) ? "pending" : status.state;
  const reason = !isPending(status) && status.reasonCode ? ` ${REASON_DESCRIPTIONS[status.reasonCode] ?? ""}` : "";
  return `Key status: ${STATE_LABELS[state] ?? state}. ${describeState(state, status)}${reason}`;
}

// A rejected replacement leaves the previous key in use, and activeVersion then names that key's version. A key
// that OpenAI rejected after it served stops serving at once, and rejectedVersion names it while its replacement is
// checked.
function describeState(state, status) {
  const activeVersion = status.activeVersion;
  if (state === "invalid" && typeof activeVersion === "number" && activeVersion !== status.version) {
    return `OpenAI rejected this key. The add-on keeps using version ${activeVersion} until you save a valid key.`;
  }
  if (state === "pending" && typeof status.rejectedVersion === "number" && typeof activeVersion !== "number") {
    return `OpenAI rejected version ${status.rejectedVersion}, so the add-on answers no prompts until this key passes its check.`;
  }
  return STATE_DESCRIPTIONS[state] ?? "";
}

function renderCheckedAt(checkedAt) {
  elements.statusCheckedAt.textContent = checkedAt
    ? `${formatRelative(checkedAt)} (${formatTimestamp(checkedAt)})`
    : "Not checked yet";
}

// activeVersion is the version of the stored key that prompts use. It trails the latest version while a new key is
// being checked and after a new key was rejected. It is missing when no key is stored, for example after the app's
// first key was rejected.
function formatVersion(status) {
  if (typeof status.version !== "number") {
    return "—";
  }
  const activeVersion = status.activeVersion;
  if (typeof activeVersion === "number" && activeVersion !== status.version) {
    return `${status.version} (the add-on still uses version ${activeVersion})`;
  }
  return String(status.version);
}

function renderReason(reasonCode) {
  elements.statusReason.replaceChildren();
  elements.statusReason.hidden = !reasonCode;
  if (!reasonCode) {
    return;
  }
  const codeElement = document.createElement("code");
  codeElement.className = "error-code";
  codeElement.textContent = reasonCode;
  const words = REASON_DESCRIPTIONS[reasonCode] ?? "The key service reported a problem with this key.";
  elements.statusReason.append(words, " ", codeElement);
}

// --- Polling ---

function schedulePoll(afterMs) {
  clearTimeout(pollTimer);
  if (!session) return;
  pollTimer = setTimeout(pollNow, afterMs);
}

/** Reads the status once and schedules the next read; a newer read or a sign-out discards this one. */
async function pollNow() {
  clearTimeout(pollTimer);
  if (!session) return;
  const generation = ++readGeneration;
  const credentials = session;
  let status;
  try {
    status = await fetchKeyStatus(credentials);
  } catch (error) {
    if (generation !== readGeneration || session !== credentials) return;
    showError(error, elements.statusError);
    schedulePoll(ERROR_POLL_MS);
    return;
  }
  if (generation !== readGeneration || session !== credentials) return;
  clearFieldError(elements.statusError);
  renderStatus(status);
  schedulePoll(isPending(status) ? PENDING_POLL_MS : IDLE_POLL_MS);
}

// --- Actions ---

/** Checks the credentials by reading the key status. Set moveFocus for a sign-in the developer started. */
async function signIn(credentials, { moveFocus = false } = {}) {
  clearFieldError(elements.signInError, [elements.appId, elements.appSecret]);
  elements.signInButton.disabled = true;
  const generation = ++readGeneration;
  try {
    const status = await fetchKeyStatus(credentials);
    if (generation !== readGeneration) return;
    session = credentials;
    saveCredentials(credentials);
    shownStatus = undefined;
    savedVersion = null;
    showSignedIn(true);
    renderStatus(status);
    schedulePoll(isPending(status) ? PENDING_POLL_MS : IDLE_POLL_MS);
    // The sign-in form is now hidden, so focus would otherwise fall back to the page.
    if (moveFocus) {
      elements.keyHeading.focus();
    }
  } catch (error) {
    session = null;
    showSignedIn(false);
    // Credentials the server rejected are dropped, so a reload does not retry them.
    if (isCredentialError(error)) {
      clearCredentials();
      showFieldError(
        elements.signInError,
        [elements.appId, elements.appSecret],
        "That app id and app secret do not match. Check both and try again.",
        error.displayCode,
      );
      elements.appSecret.focus();
    } else {
      showFieldError(elements.signInError, [], error.message, error.displayCode);
    }
  } finally {
    elements.signInButton.disabled = false;
  }
}

function signOut() {
  readGeneration++;
  clearTimeout(pollTimer);
  session = null;
  shownStatus = undefined;
  savedVersion = null;
  clearCredentials();
  elements.appSecret.value = "";
  elements.apiKey.value = "";
  clearKeyErrors();
  hideDeleteConfirm();
  showSignedIn(false);
}

async function saveKey() {
  clearKeyErrors();
  hideDeleteConfirm();
  const apiKey = elements.apiKey.value.trim();
  if (apiKey === "") {
    showFieldError(elements.apiKeyError, [elements.apiKey], "Paste your OpenAI API key first.");
    elements.apiKey.focus();
    return;
  }

  readGeneration++;
  clearTimeout(pollTimer);
  setBusy(true);
  try {
    const { data } = await requestJson("PUT", keyUrl(session.appId), { authorization: authorization(), body: { apiKey } });
    // The key leaves the page as soon as the server has it; only its hint comes back.
    elements.apiKey.value = "";
    savedVersion = typeof data?.version === "number" ? data.version : null;
    renderStatus({ ...(shownStatus ?? {}), ...data, reasonCode: null, checkedAt: shownStatus?.checkedAt ?? null });
    announce("Key saved. Checking it with OpenAI…");
    schedulePoll(PENDING_POLL_MS);
  } catch (error) {
    showError(error, elements.apiKeyError, [elements.apiKey]);
    if (session) {
      elements.apiKey.focus();
      schedulePoll(IDLE_POLL_MS);
    }
  } finally {
    setBusy(false);
  }
}

function showDeleteConfirm() {
  clearKeyErrors();
  elements.deleteConfirm.hidden = false;
  elements.deleteKeyButton.setAttribute("aria-expanded", "true");
  elements.deleteCancelButton.focus();
}

function hideDeleteConfirm({ restoreFocus = false } = {}) {
  elements.deleteConfirm.hidden = true;
  elements.deleteKeyButton.setAttribute("aria-expanded", "false");
  if (restoreFocus) {
    elements.deleteKeyButton.focus();
  }
}

async function deleteKey() {
  clearKeyErrors();
  readGeneration++;
  clearTimeout(pollTimer);
  setBusy(true);
  try {
    await requestJson("DELETE", keyUrl(session.appId), { authorization: authorization() });
  } catch (error) {
    // A key that is already gone is the outcome the developer asked for.
    if (!(error.status === 404 && error.code === "no_key_configured")) {
      showError(error, elements.deleteKeyError);
      setBusy(false);
      if (session) schedulePoll(IDLE_POLL_MS);
      return;
    }
  }
  setBusy(false);
  hideDeleteConfirm();
  savedVersion = null;
  renderStatus(null);
  elements.apiKey.focus();
  schedulePoll(IDLE_POLL_MS);
}

// --- Wiring ---

elements.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearFieldError(elements.signInError, [elements.appId, elements.appSecret]);
  const appId = elements.appId.value.trim();
  const appSecret = elements.appSecret.value;
  if (appId === "" || appSecret === "") {
    const missing = [];
    if (appId === "") missing.push(elements.appId);
    if (appSecret === "") missing.push(elements.appSecret);
    showFieldError(elements.signInError, missing, "Enter both the app id and the app secret.");
    missing[0].focus();
    return;
  }
  signIn({ appId, appSecret }, { moveFocus: true });
});

elements.signOutButton.addEventListener("click", () => {
  signOut();
  elements.appSecret.focus();
});

elements.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveKey();
});

elements.deleteKeyButton.addEventListener("click", showDeleteConfirm);
elements.deleteCancelButton.addEventListener("click", () => hideDeleteConfirm({ restoreFocus: true }));
elements.deleteConfirmButton.addEventListener("click", deleteKey);
elements.deleteConfirm.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    event.preventDefault();
    hideDeleteConfirm({ restoreFocus: true });
  }
});
elements.refreshButton.addEventListener("click", () => {
  clearFieldError(elements.statusError);
  pollNow();
});

// A tab that comes back to the front reads the status at once instead of waiting for the next poll.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && session) {
    pollNow();
  }
});

// console.html ships both submit buttons disabled, so the forms cannot be submitted before these handlers exist.
elements.signInButton.disabled = false;
elements.saveKeyButton.disabled = false;

const stored = loadCredentials();
if (stored && stored.appId !== "" && stored.appSecret !== "") {
  elements.appId.value = stored.appId;
  elements.appSecret.value = stored.appSecret;
  signIn(stored);
}
