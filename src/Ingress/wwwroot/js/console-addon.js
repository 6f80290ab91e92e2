// Developer console, add-on panels: the on/off switch (PUT /api/apps/{appId}/addon), the webhook URL
// (PUT .../webhook, whose signing secret is shown once) and usage for today and this month with the app's limits.
// console.js signs in and stores the credentials; these panels load whenever the signed-in area is shown.
import { LIMIT_UNITS, callApp, clearFieldError, showFieldError } from "./common.js";

const elements = {
  appArea: document.getElementById("app-area"),
  active: document.getElementById("addon-active"),
  activeState: document.getElementById("addon-active-state"),
  activeError: document.getElementById("addon-active-error"),
  webhookForm: document.getElementById("webhook-form"),
  webhookUrl: document.getElementById("webhook-url"),
  webhookError: document.getElementById("webhook-error"),
  webhookSaveButton: document.getElementById("webhook-save-button"),
  webhookSecret: document.getElementById("webhook-secret"),
  webhookSecretValue: document.getElementById("webhook-secret-value"),
  usageToday: document.getElementById("usage-today"),
  usageMonth: document.getElementById("usage-month"),
  usageLimits: document.getElementById("usage-limits"),
  usageError: document.getElementById("usage-error"),
  usageRefreshButton: document.getElementById("usage-refresh-button"),
};

const ACTIVATION_ERRORS = {
  key_not_active:
    "The add-on can only be switched on while the app has a usable OpenAI key. Save a key above and wait until it " +
    "shows Active or Unverified, then switch the add-on on.",
};

function renderActive(active) {
  elements.active.checked = active;
  elements.activeState.textContent = active ? "On" : "Off";
  elements.activeState.className = `badge ${active ? "badge-active" : "badge-unknown"}`;
}

async function loadActivation() {
  try {
    const { data } = await callApp("GET", "/addon");
    renderActive(data?.active === true);
    elements.webhookUrl.value = data?.webhookUrl ?? "";
    clearFieldError(elements.activeError);
  } catch (error) {
    showFieldError(elements.activeError, [], error.message, error.displayCode);
  }
}

async function setActive(active) {
  clearFieldError(elements.activeError, [elements.active]);
  elements.active.disabled = true;
  try {
    const { data } = await callApp("PUT", "/addon", { active });
    renderActive(data?.active === true);
  } catch (error) {
    renderActive(!active);
    showFieldError(elements.activeError, [elements.active], ACTIVATION_ERRORS[error.code] ?? error.message, error.displayCode);
  } finally {
    elements.active.disabled = false;
  }
}

async function saveWebhook() {
  clearFieldError(elements.webhookError, [elements.webhookUrl]);
  elements.webhookSecret.hidden = true;
  elements.webhookSecretValue.textContent = "";
  const url = elements.webhookUrl.value.trim();
  elements.webhookSaveButton.disabled = true;
  try {
    const { data } = await callApp("PUT", "/webhook", { url: url === "" ? null : url });
    if (typeof data?.signingSecret === "string" && data.signingSecret !== "") {
      elements.webhookSecretValue.textContent = data.signingSecret;
      elements.webhookSecret.hidden = false;
    }
  } catch (error) {
    showFieldError(elements.webhookError, [elements.webhookUrl], error.message, error.displayCode);
  } finally {
    elements.webhookSaveButton.disabled = false;
  }
}

function describePeriod(period) {
  if (!period) return "—";
  const tokens = Number(period.tokens ?? 0).toLocaleString();
  const requests = Number(period.requests ?? 0).toLocaleString();
  return `${tokens} tokens in ${requests} ${period.requests === 1 ? "request" : "requests"}`;
}

function describeLimits(limits) {
  const parts = [];
  for (const [name, label] of Object.entries(LIMIT_UNITS)) {
    if (typeof limits?.[name] === "number") parts.push(`${limits[name].toLocaleString()} ${label}`);
  }
  if (Array.isArray(limits?.allowedModels) && limits.allowedModels.length > 0) {
    parts.push(`models: ${limits.allowedModels.join(", ")}`);
  }
  return parts.length === 0 ? "No limits set" : parts.join(" · ");
}

async function loadUsage() {
  clearFieldError(elements.usageError);
  try {
    const { data } = await callApp("GET", "/usage");
    elements.usageToday.textContent = describePeriod(data?.today);
    elements.usageMonth.textContent = describePeriod(data?.month);
    elements.usageLimits.textContent = describeLimits(data?.limits);
  } catch (error) {
    showFieldError(elements.usageError, [], error.message, error.displayCode);
  }
}

function loadAll() {
  elements.webhookSecret.hidden = true;
  loadActivation();
  loadUsage();
}

elements.active.addEventListener("change", () => setActive(elements.active.checked));
elements.webhookForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveWebhook();
});
elements.usageRefreshButton.addEventListener("click", loadUsage);

// console.js shows the signed-in area after a successful sign-in; that is when these panels have credentials.
new MutationObserver(() => {
  if (!elements.appArea.hidden) loadAll();
}).observe(elements.appArea, { attributes: true, attributeFilter: ["hidden"] });
if (!elements.appArea.hidden) loadAll();
