// Developer console: signs in with an app id and secret, then stores, deletes and
// shows the app's OpenAI key through /api/apps/{appId}/openai-key.
import {
  basicAuthorization,
  clearCredentials,
  clearFieldError,
  formatTimestamp,
  loadCredentials,
  requestJson,
  saveCredentials,
  showFieldError,
} from "./common.js";

const POLL_INTERVAL_MS = 1000;
const POLL_TIMEOUT_MS = 60_000;

const STATE_LABELS = {
  pending: "Pending",
  active: "Active",
  invalid: "Invalid",
  unverified: "Unverified",
};

const STATE_DESCRIPTIONS = {
  pending: "The key service has not checked this key yet.",
  active: "OpenAI accepted this key. Prompts use it.",
  invalid: "OpenAI rejected this key. Prompts fail until you save a valid key.",
  unverified: "The key is stored, but OpenAI could not be reached to check it. Prompts still use it.",
};

const REASON_DESCRIPTIONS = {
  key_invalid: "OpenAI rejected the key as invalid or revoked.",
  upstream_auth_failed: "Authentication with OpenAI failed when the key was checked.",
  upstream_unavailable: "OpenAI could not be reached while checking the key.",
  upstream_timeout: "OpenAI did not answer in time while checking the key.",
  upstream_rate_limited: "OpenAI rate-limited the check of the key.",
  upstream_invalid_response: "OpenAI returned a response that could not be read while checking the key.",
  upstream_bad_request: "OpenAI rejected the check request.",
  key_unreadable: "The stored key could not be decrypted. Save the key again.",
  internal_error: "The key service failed while handling the key.",
};

const elements = {
  signInForm: document.getElementById("sign-in-form"),
  appId: document.getElementById("app-id"),
  appSecret: document.getElementById("app-secret"),
  signInError: document.getElementById("sign-in-error"),
  signInButton: document.getElementById("sign-in-button"),
  signOutButton: document.getElementById("sign-out-button"),
  signedIn: document.getElementById("signed-in"),
  signedInApp: document.getElementById("signed-in-app"),
  keySections: document.getElementById("key-sections"),
  keyForm: document.getElementById("key-form"),
  apiKey: document.getElementById("api-key"),
  apiKeyError: document.getElementById("api-key-error"),
  saveKeyButton: document.getElementById("save-key-button"),
  deleteKeyButton: document.getElementById("delete-key-button"),
  deleteKeyError: document.getElementById("delete-key-error"),
  refreshButton: document.getElementById("refresh-button"),
  statusEmpty: document.getElementById("status-empty"),
  statusDetails: document.getElementById("status-details"),
  statusState: document.getElementById("status-state"),
  statusStateDescription: document.getElementById("status-state-description"),
  statusHint: document.getElementById("status-hint"),
  statusVersion: document.getElementById("status-version"),
  statusReason: document.getElementById("status-reason"),
  statusCheckedAt: document.getElementById("status-checked-at"),
  statusUpdatedAt: document.getElementById("status-updated-at"),
  statusProgress: document.getElementById("status-progress"),
  statusError: document.getElementById("status-error"),
};

/** The signed-in app, or null. Set only after the server accepted the credentials. */
let session = null;

// Incremented to cancel a running poll loop: on sign-out, a new save, a delete or a refresh.
let pollGeneration = 0;

function keyUrl(appId) {
  return `/api/apps/${encodeURIComponent(appId)}/openai-key`;
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
  return error.code === "unauthorized" || error.code === "forbidden" || error.status === 401 || error.status === 403;
}

/**
 * Shows an error next to the field that caused it. Rejected credentials (the secret may have been
 * rotated since sign-in) sign the developer out and show the error on the sign-in form.
 */
function showError(error, errorElement, inputs = []) {
  if (isCredentialError(error)) {
    signOut();
    showFieldError(elements.signInError, [elements.appId, elements.appSecret], error.message, error.displayCode);
    elements.appSecret.focus();
    return;
  }
  showFieldError(errorElement, inputs, error.message, error.displayCode);
}

function clearAllErrors() {
  clearFieldError(elements.signInError, [elements.appId, elements.appSecret]);
  clearFieldError(elements.apiKeyError, [elements.apiKey]);
  clearFieldError(elements.deleteKeyError);
  clearFieldError(elements.statusError);
}

function setBusy(isBusy) {
  for (const button of [elements.saveKeyButton, elements.deleteKeyButton, elements.refreshButton]) {
    button.disabled = isBusy;
  }
}

function showSignedIn(isSignedIn) {
  elements.signInForm.hidden = isSignedIn;
  elements.signedIn.hidden = !isSignedIn;
  elements.keySections.hidden = !isSignedIn;
  elements.signedInApp.textContent = isSignedIn ? session.appId : "";
}

function setProgress(text) {
  elements.statusProgress.textContent = text ?? "";
  elements.statusProgress.hidden = !text;
}

function renderStatus(status) {
  if (status === null) {
    elements.statusEmpty.hidden = false;
    elements.statusDetails.hidden = true;
    return;
  }
  elements.statusEmpty.hidden = true;
  elements.statusDetails.hidden = false;

  const state = typeof status.state === "string" ? status.state : "unknown";
  elements.statusState.className = `badge badge-${STATE_LABELS[state] ? state : "unknown"}`;
  elements.statusState.textContent = STATE_LABELS[state] ?? state;
  elements.statusStateDescription.textContent = STATE_DESCRIPTIONS[state] ?? "";

  elements.statusHint.textContent = status.hint || "—";
  elements.statusVersion.textContent = formatVersion(status);
  renderReason(status.reasonCode);
  elements.statusCheckedAt.textContent = formatTimestamp(status.checkedAt, "Not checked yet");
  elements.statusUpdatedAt.textContent = formatTimestamp(status.updatedAt);
}

// activeVersion is the version whose key prompts use. It trails the latest version while a new key is
// pending, and is missing when no usable key is stored, for example after the latest key was rejected.
function formatVersion(status) {
  if (status.version === undefined || status.version === null) {
    return "—";
  }
  const activeVersion = status.activeVersion;
  if (typeof activeVersion === "number" && activeVersion !== status.version) {
    return `${status.version} (prompts use version ${activeVersion})`;
  }
  return String(status.version);
}

function renderReason(reasonCode) {
  elements.statusReason.replaceChildren();
  if (!reasonCode) {
    elements.statusReason.textContent = "—";
    return;
  }
  const codeElement = document.createElement("code");
  codeElement.className = "error-code";
  codeElement.textContent = reasonCode;
  const words = REASON_DESCRIPTIONS[reasonCode] ?? "The key service reported this code.";
  elements.statusReason.append(words, " ", codeElement);
}

/** Checks the credentials by fetching the key status. Set moveFocus for a sign-in that the developer started. */
async function signIn(credentials, { moveFocus = false } = {}) {
  clearAllErrors();
  pollGeneration++;
  elements.signInButton.disabled = true;
  try {
    const status = await fetchKeyStatus(credentials);
    session = credentials;
    saveCredentials(credentials);
    showSignedIn(true);
    setProgress(null);
    renderStatus(status);
    if (status?.state === "pending") {
      pollWhilePending(status.version);
    }
    // The sign-in form is now hidden, so focus would otherwise fall back to the page.
    if (moveFocus) {
      document.getElementById("status-heading").focus();
    }
  } catch (error) {
    pollGeneration++;
    session = null;
    showSignedIn(false);
    // Drop credentials that the server rejected, so a reload does not retry them.
    if (isCredentialError(error)) {
      clearCredentials();
    }
    // Mark the fields only when the server rejected them, not when it could not be reached.
    const inputs = isCredentialError(error) ? [elements.appId, elements.appSecret] : [];
    showFieldError(elements.signInError, inputs, error.message, error.displayCode);
  } finally {
    elements.signInButton.disabled = false;
  }
}

function signOut() {
  pollGeneration++;
  session = null;
  clearCredentials();
  elements.appSecret.value = "";
  elements.apiKey.value = "";
  clearAllErrors();
  setProgress(null);
  showSignedIn(false);
}

async function saveKey() {
  clearAllErrors();
  const apiKey = elements.apiKey.value.trim();
  if (apiKey === "") {
    showFieldError(elements.apiKeyError, [elements.apiKey], "Enter an OpenAI API key before saving.");
    elements.apiKey.focus();
    return;
  }

  pollGeneration++;
  setBusy(true);
  try {
    const { data } = await requestJson("PUT", keyUrl(session.appId), {
      authorization: basicAuthorization(session.appId, session.appSecret),
      body: { apiKey },
    });
    elements.apiKey.value = "";
    renderStatus(data);
    if (data?.state === "pending") {
      pollWhilePending(data.version);
    } else {
      setProgress(null);
    }
  } catch (error) {
    showError(error, elements.apiKeyError, [elements.apiKey]);
  } finally {
    setBusy(false);
  }
}

async function deleteKey() {
  clearAllErrors();
  const confirmed = window.confirm(
    `Delete the OpenAI key of app ${session.appId}? Prompts fail with no_key_configured until a new key is saved.`,
  );
  if (!confirmed) {
    return;
  }

  pollGeneration++;
  setProgress(null);
  setBusy(true);
  try {
    await requestJson("DELETE", keyUrl(session.appId), {
      authorization: basicAuthorization(session.appId, session.appSecret),
    });
  } catch (error) {
    // A key that is already gone is the outcome the developer asked for.
    if (!(error.status === 404 && error.code === "no_key_configured")) {
      showError(error, elements.deleteKeyError);
      setBusy(false);
      return;
    }
  }
  setBusy(false);
  await refreshStatus();
}

async function refreshStatus() {
  clearFieldError(elements.statusError);
  pollGeneration++;
  setBusy(true);
  try {
    const status = await fetchKeyStatus(session);
    renderStatus(status);
    if (status?.state === "pending") {
      pollWhilePending(status.version);
    } else {
      setProgress(null);
    }
  } catch (error) {
    showError(error, elements.statusError);
  } finally {
    setBusy(false);
  }
}

/**
 * Polls the key status every second until it leaves the pending state or POLL_TIMEOUT_MS passes.
 * A status with a version older than savedVersion also counts as pending, because it predates the save.
 */
async function pollWhilePending(savedVersion) {
  const generation = ++pollGeneration;
  const startedAt = Date.now();
  setProgress("Checking the key with OpenAI…");

  while (generation === pollGeneration) {
    await delay(POLL_INTERVAL_MS);
    if (generation !== pollGeneration) {
      return;
    }

    let status;
    try {
      status = await fetchKeyStatus(session);
    } catch (error) {
      if (generation !== pollGeneration) {
        return;
      }
      showError(error, elements.statusError);
      if (isCredentialError(error)) {
        setProgress(null);
        return;
      }
      // Other failures may be brief (a restart or a dropped connection), so keep polling until the deadline.
      status = undefined;
    }
    if (generation !== pollGeneration) {
      return;
    }

    if (status !== undefined) {
      clearFieldError(elements.statusError);
      renderStatus(status);
      const isPending = status !== null && (status.state === "pending" || isOlderVersion(status.version, savedVersion));
      if (!isPending) {
        setProgress(null);
        return;
      }
    }

    const elapsedSeconds = Math.round((Date.now() - startedAt) / 1000);
    if (Date.now() - startedAt >= POLL_TIMEOUT_MS) {
      setProgress(`The key was still pending after ${elapsedSeconds} seconds. Select Refresh to check again.`);
      return;
    }
    setProgress(`Checking the key with OpenAI… (${elapsedSeconds} s)`);
  }
}

function isOlderVersion(version, savedVersion) {
  return typeof version === "number" && typeof savedVersion === "number" && version < savedVersion;
}

function delay(milliseconds) {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

elements.signInForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearAllErrors();
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

elements.deleteKeyButton.addEventListener("click", deleteKey);
elements.refreshButton.addEventListener("click", refreshStatus);

const stored = loadCredentials();
if (stored && stored.appId !== "" && stored.appSecret !== "") {
  elements.appId.value = stored.appId;
  elements.appSecret.value = stored.appSecret;
  signIn({ appId: stored.appId, appSecret: stored.appSecret });
}
