// Spending limits panel of the developer console. It reads and stores the developer's own limits through
// GET and PUT /api/apps/{appId}/limits, and shows next to each limit the one in force, which is the stricter of the
// developer's and the operator's. console.js signs in and stores the credentials.
import { LIMIT_UNITS, callApp, clearFieldError, formatTime, showFieldError } from "./common.js";

// The numeric limits in the order of the form. Each unit completes "Applies: 500 …".
const NUMBER_LIMITS = [
  { name: "requestsPerMinute", inputId: "limit-requests-per-minute" },
  { name: "userRequestsPerMinute", inputId: "limit-user-requests-per-minute" },
  { name: "tokensPerDay", inputId: "limit-tokens-per-day" },
  { name: "tokensPerMonth", inputId: "limit-tokens-per-month" },
  { name: "maxOutputTokens", inputId: "limit-max-output-tokens" },
].map((limit) => ({ ...limit, unit: LIMIT_UNITS[limit.name] }));

const MODELS_INPUT_ID = "limit-allowed-models";

const elements = {
  appArea: document.getElementById("app-area"),
  form: document.getElementById("limits-form"),
  modelsInput: document.getElementById(MODELS_INPUT_ID),
  modelsEffective: document.getElementById(`${MODELS_INPUT_ID}-effective`),
  loadError: document.getElementById("limits-load-error"),
  error: document.getElementById("limits-error"),
  status: document.getElementById("limits-status"),
  saveButton: document.getElementById("limits-save-button"),
  reloadButton: document.getElementById("limits-reload-button"),
  usageRefreshButton: document.getElementById("usage-refresh-button"),
};

const numberFields = NUMBER_LIMITS.map((limit) => ({
  ...limit,
  input: document.getElementById(limit.inputId),
  effective: document.getElementById(`${limit.inputId}-effective`),
}));

const allInputs = [...numberFields.map((field) => field.input), elements.modelsInput];

// Incremented by every load, save and sign-out, so a response that arrives after a newer request is dropped.
let requestGeneration = 0;

function labelOf(input) {
  return document.querySelector(`label[for="${input.id}"]`)?.textContent.trim() ?? input.name;
}

function formatNumber(value) {
  return typeof value === "number" ? String(value) : "";
}

function describeNumberInForce(field, own, operator, effective) {
  if (typeof effective !== "number") {
    return "Applies: no limit";
  }
  let source = "the operator's limit";
  if (own === effective) {
    source = operator === effective ? "your limit and the operator's" : "your limit";
  }
  return `Applies: ${effective.toLocaleString()} ${field.unit}, ${source}`;
}

function describeModelsInForce(own, operator, effective) {
  if (!Array.isArray(effective)) {
    return "Applies: any model";
  }
  // The server rejects an empty list on save, so an empty list in force means that the two lists share no model.
  if (effective.length === 0) {
    return "Applies: no model, because your list and the operator's have no model in common";
  }
  let source = "the models on both your list and the operator's";
  if (!Array.isArray(own)) {
    source = "the operator's list";
  } else if (!Array.isArray(operator)) {
    source = "your list";
  }
  return `Applies: ${effective.join(", ")}, ${source}`;
}

/** Fills the form with the developer's own limits and shows the limits in force next to them. */
function render(data) {
  const own = data?.limits ?? {};
  const operator = data?.operatorLimits ?? {};
  const effective = data?.effective ?? {};
  for (const field of numberFields) {
    field.input.value = formatNumber(own[field.name]);
    field.effective.textContent = describeNumberInForce(field, own[field.name], operator[field.name], effective[field.name]);
  }
  elements.modelsInput.value = Array.isArray(own.allowedModels) ? own.allowedModels.join(", ") : "";
  elements.modelsEffective.textContent = describeModelsInForce(own.allowedModels, operator.allowedModels, effective.allowedModels);
}

function clearErrors() {
  clearFieldError(elements.loadError);
  clearFieldError(elements.error, allInputs);
}

function reset() {
  requestGeneration++;
  clearErrors();
  elements.status.textContent = "";
  elements.saveButton.disabled = true;
  for (const input of allInputs) {
    input.value = "";
  }
  for (const field of numberFields) {
    field.effective.textContent = "Applies: —";
  }
  elements.modelsEffective.textContent = "Applies: —";
}

async function load() {
  const generation = ++requestGeneration;
  clearErrors();
  elements.status.textContent = "";
  elements.saveButton.disabled = true;
  elements.reloadButton.disabled = true;
  try {
    const { data } = await callApp("GET", "/limits");
    if (generation !== requestGeneration) return;
    render(data);
    elements.saveButton.disabled = false;
  } catch (error) {
    if (generation !== requestGeneration) return;
    // Save stays disabled because the form may not match what is stored, and saving it would overwrite the stored limits.
    showFieldError(elements.loadError, [], error.message, error.displayCode);
  } finally {
    if (generation === requestGeneration) {
      elements.reloadButton.disabled = false;
    }
  }
}

/**
 * Reads the form into a PUT body and lists the inputs that do not hold a whole number. Only the format is checked
 * here, so the server's own message explains a number it rejects.
 */
function readForm() {
  const body = {};
  const invalid = [];
  for (const field of numberFields) {
    const text = field.input.value.trim();
    if (text === "") {
      body[field.name] = null;
    } else if (/^-?\d+$/.test(text) && Number.isSafeInteger(Number(text))) {
      body[field.name] = Number(text);
    } else {
      invalid.push(field.input);
    }
  }
  // The server rejects an empty list, which would read as no model allowed, so an empty field sends null instead.
  const models = elements.modelsInput.value
    .split(",")
    .map((model) => model.trim())
    .filter((model) => model !== "");
  body.allowedModels = models.length === 0 ? null : models;
  return { body, invalid };
}

async function save() {
  clearErrors();
  elements.status.textContent = "";
  const { body, invalid } = readForm();
  if (invalid.length > 0) {
    const labels = invalid.map(labelOf).join(", ");
    showFieldError(
      elements.error,
      invalid,
      `Enter a whole number without separators, such as 50000, or leave the field empty for no limit of your own: ${labels}.`,
    );
    invalid[0].focus();
    return;
  }

  const generation = ++requestGeneration;
  elements.saveButton.disabled = true;
  elements.reloadButton.disabled = true;
  try {
    const { data } = await callApp("PUT", "/limits", body);
    if (generation !== requestGeneration) return;
    render(data);
    elements.status.textContent = `Limits saved at ${formatTime(new Date())}.`;
    // The Usage card lists the limits in force as well, so it is read again to match the new ones.
    elements.usageRefreshButton?.click();
  } catch (error) {
    if (generation !== requestGeneration) return;
    // The inputs keep what the developer typed, so they can correct it. The limits in force shown next to them
    // still describe the stored limits, because a rejected save changes nothing on the server.
    showFieldError(elements.error, [], error.message, error.displayCode);
  } finally {
    if (generation === requestGeneration) {
      elements.saveButton.disabled = false;
      elements.reloadButton.disabled = false;
    }
  }
}

elements.form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!elements.saveButton.disabled) save();
});
elements.reloadButton.addEventListener("click", load);

// console.js shows the signed-in area after a successful sign-in and hides it at sign-out, which may switch apps.
new MutationObserver(() => {
  if (elements.appArea.hidden) {
    reset();
  } else {
    load();
  }
}).observe(elements.appArea, { attributes: true, attributeFilter: ["hidden"] });
if (!elements.appArea.hidden) load();
