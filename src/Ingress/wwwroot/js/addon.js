// Add-on demo, the host's part: the page asks the host's backend (POST /demo/token) for an end-user token and
// mounts the add-on from /addon/addonevents.js with it. The add-on renews the token through getToken and does
// everything else: connection, prompts, answers, reconnecting.
import { clearFieldError, formatTime, requestJson, showFieldError } from "./common.js";

const TOKEN_URL = "/demo/token";
const USER_STORAGE_KEY = "addonevents.demoUserId";

const NO_DEMO_BACKEND_MESSAGE =
  "This server has no demo host backend. Start AddOnEvents with run.sh, which creates a demo app and sets " +
  "Demo:AppId and Demo:AppSecret for Ingress.";

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
  assistant: document.getElementById("assistant"),
};

// Shown in place of the add-on until a session starts, and again after Switch user.
const placeholder = [...elements.assistant.childNodes];

/** {userId, addon} of the signed-in end user, or null. */
let session = null;

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
  if (typeof data.token !== "string" || data.token === "" || Number.isNaN(Date.parse(data.expiresAt))) {
    throw new Error("The host's backend answered without a usable token.");
  }
  return data;
}

function describeToken(expiresAt) {
  elements.sessionInfo.textContent =
    `The session renews itself. Current token valid until ${formatTime(new Date(expiresAt))}.`;
}

async function startSession(userId) {
  clearFieldError(elements.userIdError, [elements.userId]);
  elements.startSessionButton.disabled = true;
  let first;
  try {
    first = await requestToken(userId);
  } catch (error) {
    const inputs = error.code === "invalid_request" ? [elements.userId] : [];
    showFieldError(elements.userIdError, inputs, error.message, error.displayCode);
    elements.userId.focus();
    return;
  } finally {
    elements.startSessionButton.disabled = false;
  }

  sessionStorage.setItem(USER_STORAGE_KEY, userId);
  elements.sessionUser.textContent = userId;
  describeToken(first.expiresAt);
  clearFieldError(elements.sessionWarning);
  elements.sessionForm.hidden = true;
  elements.sessionActive.hidden = false;

  // The first token is handed over as is; later ones come from the host's backend when the add-on asks.
  let pending = first;
  const owner = { userId };
  owner.addon = AddOnEvents.mount(elements.assistant, {
    baseUrl: "",
    getToken: async () => {
      if (pending) {
        const issued = pending;
        pending = null;
        return issued;
      }
      try {
        const issued = await requestToken(userId);
        if (session === owner) {
          describeToken(issued.expiresAt);
          clearFieldError(elements.sessionWarning);
        }
        return issued;
      } catch (error) {
        if (session === owner) {
          showFieldError(elements.sessionWarning, [], `Could not renew the session: ${error.message} Trying again shortly.`);
        }
        throw error;
      }
    },
  });
  session = owner;
  owner.addon.focus();
}

async function endSession() {
  const ending = session;
  session = null;
  elements.sessionActive.hidden = true;
  elements.sessionForm.hidden = false;
  if (ending) {
    await ending.addon.destroy();
  }
  elements.assistant.replaceChildren(...placeholder);
}

elements.sessionForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const userId = elements.userId.value.trim();
  if (userId === "") {
    showFieldError(elements.userIdError, [elements.userId], "Enter an end-user id, for example u-123.");
    elements.userId.focus();
    return;
  }
  startSession(userId);
});

elements.endSessionButton.addEventListener("click", async () => {
  await endSession();
  elements.userId.focus();
});

const rememberedUser = sessionStorage.getItem(USER_STORAGE_KEY);
if (rememberedUser) {
  elements.userId.value = rememberedUser;
  startSession(rememberedUser);
}
