// The AddOnEvents add-on as a host page embeds it:
//
//   <script src="https://addonevents.example/addon/addonevents.js"></script>
//   const addon = AddOnEvents.mount(element, { getToken: async () => token, onInsert: (text) => ... });
//   addon.on("answer", ({ text, requestId }) => ...);
//
// A classic script, not a module, so a host page needs no build step and no import map. It loads the SignalR client
// and its own stylesheet from the same server. Every text from the server or the user goes in through textContent.
(() => {
  "use strict";

  // The server this script came from is the default baseUrl, so a host page needs to name it only once.
  const SCRIPT_ORIGIN = (() => {
    try {
      return new URL(document.currentScript.src).origin;
    } catch {
      return "";
    }
  })();

  // Delays between reconnect attempts; the last one repeats for as long as the add-on is mounted.
  const RECONNECT_DELAYS_MS = [0, 1000, 2000, 4000, 8000];

  // Delay before connecting again after the server rejected a connection, for example because the user has too many
  // open. The user may close another tab meanwhile, so the add-on keeps trying, but slowly. A positive
  // retryAfterSeconds from the server replaces it.
  const REJECTED_RETRY_MS = 30_000;

  // A token is renewed a minute before it expires, or with a fifth of its life left when it lives under five
  // minutes. A connection that starts within a few seconds of the expiry waits for a renewal first.
  const TOKEN_RENEW_MARGIN_MS = 60_000;
  const TOKEN_RENEW_MINIMUM_MS = 5_000;
  const TOKEN_EXPIRY_GUARD_MS = 10_000;
  const TOKEN_RETRY_MS = 15_000;

  // Hub events for requests this add-on does not know yet: the server can be faster than the SubmitPrompt result,
  // and another tab of the same user receives events too. The cap bounds the second kind.
  const MAX_BUFFERED_REQUESTS = 100;

  const EVENTS = ["answer", "inserted", "usage", "allowanceThreshold", "error"];

  const TONES = [
    ["professional", "Professional"],
    ["formal", "Formal"],
    ["casual", "Casual"],
    ["friendly", "Friendly"],
    ["confident", "Confident"],
  ];

  /** Sentences for the person using the add-on, one per stable error code. */
  const FAILURE_SENTENCES = {
    no_key_configured:
      "The assistant is not set up yet: this app has no OpenAI key. The app's developer adds one in the developer console.",
    key_invalid: "OpenAI rejected this app's key. The app's developer must save a valid key in the developer console.",
    key_unreadable: "This app's stored key could not be read. The app's developer must save the key again.",
    key_not_active:
      "The assistant cannot be switched on while the app's OpenAI key is not active. The app's developer must save a working key first.",
    upstream_auth_failed:
      "OpenAI rejected this app's key for this request. The app's developer must replace it in the developer console.",
    upstream_forbidden:
      "OpenAI rejected this request with this app's key, for example because the key may not use this model. The app's developer can check its access.",
    upstream_quota_exhausted:
      "This app's OpenAI account has no credit left. The app's developer must add credit at OpenAI.",
    upstream_rate_limited: (failure) =>
      `OpenAI is receiving too many requests from this app. ${retryLater(failure, "Wait a moment and try again.")}`,
    rate_limited: (failure) => `You are sending prompts too quickly. ${retryLater(failure, "Wait a moment and try again.")}`,
    quota_exceeded: (failure) =>
      `${failure.message || "The token allowance is used up."} The assistant answers again when the allowance resets ` +
      "or the app raises it.",
    addon_inactive:
      "The assistant is switched off for this app. The app's developer switches it on in the developer console.",
    addon_disabled_for_user: "The assistant is switched off for your account. Ask the app's administrator to switch it on.",
    freeform_disabled:
      "Free-form questions are switched off for your account. Select text in the editor and use one of the actions instead.",
    model_not_allowed: "The model the assistant asked for is not enabled for this app. The app's developer can allow it.",
    upstream_unavailable: "OpenAI could not be reached or had a server error. Try again in a minute.",
    upstream_timeout: "OpenAI did not answer in time. Try again, or ask a shorter question.",
    upstream_bad_request: "OpenAI did not accept this request. Rephrase the question and try again.",
    upstream_invalid_response: "OpenAI sent an answer that could not be read. Try again.",
    model_not_found: "The model this app asks for is not available with its OpenAI key.",
    content_filtered: "OpenAI's content filter stopped this answer. Rephrase the question and try again.",
    refused: "The model declined to answer this question.",
    prompt_too_long: "The question is too long. Shorten it and send it again.",
    invalid_request: (failure) => `The request was not accepted. ${failure.message || "Check that it is not empty."}`,
    request_expired: "The question waited too long to be answered. Send it again.",
    unauthorized: "Your session has expired. Reload the page to start a new one.",
    forbidden: "You may not use the assistant in this app. Contact the app's developer.",
    service_unavailable: "The assistant is briefly unavailable. Try again in a few seconds.",
    internal_error: "Something went wrong inside the assistant. Try again; if it keeps failing, contact the app's developer.",
    connection_lost: "The connection dropped while the question was being sent, so it may not have arrived. Send it again.",
    network_error: "The server could not be reached. Check your connection and try again.",
    token_unavailable: "The host page could not start a session for the assistant. Reload the page and try again.",
    signalr_missing: "The assistant's connection library did not load. Reload the page; if it keeps failing, the server is misconfigured.",
  };

  /** Shown when the server rejects a connection without a message of its own. */
  const CONNECTION_REJECTED_SENTENCE =
    "The server rejected the connection, for example because this account has too many windows of the assistant open.";

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

  const ENTRY_BADGES = {
    sending: ["pending", "Sending…"],
    waiting: ["pending", "Thinking…"],
    streaming: ["pending", "Writing…"],
    answered: ["active", "Answered"],
    failed: ["invalid", "Failed"],
    stopped: ["unknown", "Stopped"],
  };

  const ACTION_LABELS = {
    shorten: "Shorten",
    expand: "Expand",
    fix_grammar: "Fix grammar",
    change_tone: "Change tone",
    translate: "Translate",
  };

  let mountCount = 0;

  // --- Helpers that need no mounted add-on ---

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

  function formatTime(date, locale) {
    return date.toLocaleTimeString(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** Reads the expiry (ms) from a JWT's exp claim, or NaN when the token is not a readable JWT. */
  function jwtExpiry(token) {
    try {
      const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
      return typeof claims.exp === "number" ? claims.exp * 1000 : Number.NaN;
    } catch {
      return Number.NaN;
    }
  }

  /** Turns what getToken returned (a token, or {token, expiresAt}) into {token, expiresAt (ms)}. */
  function readIssuedToken(issued) {
    const token = typeof issued === "string" ? issued : issued?.token;
    if (typeof token !== "string" || token === "") {
      throw new Error("getToken returned no token.");
    }
    let expiresAt = typeof issued === "object" && issued.expiresAt ? Date.parse(issued.expiresAt) : Number.NaN;
    if (Number.isNaN(expiresAt)) expiresAt = jwtExpiry(token);
    // A token with no readable expiry is asked for again after five minutes.
    if (Number.isNaN(expiresAt)) expiresAt = Date.now() + 5 * 60_000;
    return { token, expiresAt };
  }

  function renewAfter(expiresAt) {
    const remaining = expiresAt - Date.now();
    return Math.max(TOKEN_RENEW_MINIMUM_MS, remaining - Math.min(TOKEN_RENEW_MARGIN_MS, remaining * 0.2));
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

  const loadedAssets = new Map();

  /** Adds a script or stylesheet once per URL; resolves when it has loaded. */
  function loadAsset(kind, url) {
    if (!loadedAssets.has(url)) {
      loadedAssets.set(url, new Promise((resolve, reject) => {
        const node = kind === "script" ? document.createElement("script") : document.createElement("link");
        if (kind === "script") {
          node.src = url;
        } else {
          node.rel = "stylesheet";
          node.href = url;
        }
        node.addEventListener("load", () => resolve());
        node.addEventListener("error", () => reject(new Error(`${url} did not load.`)));
        document.head.append(node);
      }));
    }
    return loadedAssets.get(url);
  }

  function ensureSignalR(baseUrl) {
    if (typeof window.signalR !== "undefined") return Promise.resolve();
    return loadAsset("script", `${baseUrl}/lib/signalr/signalr.min.js`);
  }

  // --- One mounted add-on ---

  function mount(host, options = {}) {
    if (!(host instanceof Element)) {
      throw new TypeError("AddOnEvents.mount needs an element to render into.");
    }
    if (typeof options.getToken !== "function") {
      throw new TypeError("AddOnEvents.mount needs options.getToken, an async function that returns an end-user token.");
    }
    const baseUrl = String(options.baseUrl ?? SCRIPT_ORIGIN).replace(/\/+$/, "");
    const locale = options.locale;
    const id = `aoe-${++mountCount}`;
    if (options.styles !== false) {
      loadAsset("style", `${baseUrl}/addon/addonevents.css`).catch(() => {});
    }

    const handlers = new Map(EVENTS.map((name) => [name, new Set()]));
    let destroyed = false;
    let tokenState = null;
    let tokenRenewal = null;
    let renewTimer = null;
    let connection = null;
    // The ConnectionRejected payload of the current connection, until connectWithRetry has shown it and waited.
    let rejection = null;
    // Set after a closed connection or a failed attempt, so the next attempt first checks that the cached token is
    // still accepted. The server rejects a token whose app secret was revoked before the token expires.
    let verifyTokenBeforeConnect = false;
    let activeEntry = null;
    let selection = "";
    let lastInput = null;
    const entries = new Map();
    const bufferedEvents = new Map();

    // --- Rendering ---

    const ui = buildInterface();
    host.replaceChildren(ui.root);

    function buildInterface() {
      const root = element("section", "card addon aoe");
      root.setAttribute("aria-labelledby", `${id}-heading`);

      const header = element("div", "addon-header");
      const heading = element("h2", null, "Assistant");
      heading.id = `${id}-heading`;
      const status = element("p", "connection");
      status.setAttribute("role", "status");
      status.setAttribute("aria-live", "polite");
      const dot = element("span", "connection-dot connection-disconnected");
      dot.setAttribute("aria-hidden", "true");
      const connectionText = element("span", "addon-connection-text", CONNECTION_LABELS.disconnected);
      status.append(dot, connectionText);
      header.append(heading, status);

      const connectionDetail = element("p", "banner addon-connection-detail");
      connectionDetail.hidden = true;
      const thresholdBanner = element("p", "banner aoe-threshold");
      thresholdBanner.hidden = true;

      const empty = element("div", "empty-state aoe-empty");
      empty.append(element("p", null, "Ask a question below, or select text in the editor and pick an action."));
      const conversation = element("ol", "conversation");
      conversation.setAttribute("aria-label", "Conversation");

      // Preset actions on the text the host reports as selected.
      const presets = element("div", "aoe-presets");
      presets.setAttribute("role", "group");
      presets.setAttribute("aria-labelledby", `${id}-selection-heading`);
      const selectionHeading = element("p", "aoe-presets-heading", "Selected text");
      selectionHeading.id = `${id}-selection-heading`;
      const selectionText = element("p", "aoe-selection hint", "Select text in the editor to shorten, expand, fix, restyle or translate it.");
      const presetButtons = element("div", "actions aoe-preset-buttons");
      const actionButtons = {};
      for (const action of ["shorten", "expand", "fix_grammar"]) {
        actionButtons[action] = element("button", "small", ACTION_LABELS[action]);
        actionButtons[action].type = "button";
        actionButtons[action].dataset.action = action;
        presetButtons.append(actionButtons[action]);
      }
      const toneRow = element("div", "aoe-preset-row");
      const toneLabel = element("label", null, "Tone");
      const toneSelect = element("select");
      toneSelect.id = `${id}-tone`;
      toneLabel.htmlFor = toneSelect.id;
      for (const [value, label] of TONES) {
        const option = element("option", null, label);
        option.value = value;
        toneSelect.append(option);
      }
      actionButtons.change_tone = element("button", "small", ACTION_LABELS.change_tone);
      actionButtons.change_tone.type = "button";
      toneRow.append(toneLabel, toneSelect, actionButtons.change_tone);
      const languageRow = element("div", "aoe-preset-row");
      const languageLabel = element("label", null, "Language");
      const languageInput = element("input");
      languageInput.type = "text";
      languageInput.id = `${id}-language`;
      languageInput.maxLength = 40;
      languageInput.autocomplete = "off";
      languageInput.value = "German";
      languageLabel.htmlFor = languageInput.id;
      actionButtons.translate = element("button", "small", ACTION_LABELS.translate);
      actionButtons.translate.type = "button";
      languageRow.append(languageLabel, languageInput, actionButtons.translate);
      presets.append(selectionHeading, selectionText, presetButtons, toneRow, languageRow);

      const form = element("form", "composer");
      form.noValidate = true;
      const promptLabel = element("label", null, "Ask the assistant");
      const prompt = element("textarea");
      prompt.id = `${id}-prompt`;
      prompt.rows = 3;
      prompt.placeholder = "Summarize this page in three bullet points…";
      promptLabel.htmlFor = prompt.id;
      const promptError = element("p", "field-error");
      promptError.id = `${id}-prompt-error`;
      promptError.setAttribute("role", "alert");
      promptError.hidden = true;
      const hint = element("p", "hint");
      hint.id = `${id}-prompt-hint`;
      hint.append(element("kbd", null, "Ctrl"), "+", element("kbd", null, "Enter"), " sends. ",
        element("kbd", null, "Esc"), " stops the answer being written.");
      prompt.setAttribute("aria-describedby", `${hint.id} ${promptError.id}`);
      const footer = element("div", "composer-footer");
      const buttons = element("div", "actions");
      const stopButton = element("button", null, "Stop");
      stopButton.type = "button";
      const regenerateButton = element("button", null, "Regenerate");
      regenerateButton.type = "button";
      const sendButton = element("button", "primary", "Send");
      sendButton.type = "submit";
      buttons.append(stopButton, regenerateButton, sendButton);
      footer.append(hint, buttons);
      form.append(promptLabel, prompt, promptError, footer);

      const usage = element("p", "aoe-usage");
      usage.hidden = true;
      // Announces finished answers and failures once, instead of reading the streamed text as it grows.
      const announcer = element("p", "visually-hidden addon-announcer");
      announcer.setAttribute("aria-live", "polite");

      root.append(header, connectionDetail, thresholdBanner, empty, conversation, presets, form, usage, announcer);
      return {
        root, dot, connectionText, connectionDetail, thresholdBanner, empty, conversation, selectionText,
        actionButtons, toneSelect, languageInput, form, prompt, promptError, stopButton, regenerateButton,
        sendButton, usage, announcer,
      };
    }

    function emit(name, detail) {
      for (const handler of handlers.get(name)) {
        try {
          handler(detail);
        } catch (error) {
          // A failing host handler must not stop the add-on; the host still sees it in its console.
          setTimeout(() => {
            throw error;
          });
        }
      }
    }

    let announceTimer = null;

    function announce(text) {
      ui.announcer.textContent = "";
      clearTimeout(announceTimer);
      // Clearing first and writing a moment later makes screen readers repeat an identical sentence.
      announceTimer = setTimeout(() => {
        ui.announcer.textContent = text;
      }, 100);
    }

    function setConnectionState(state, detail = null) {
      ui.dot.className = `connection-dot connection-${state}`;
      ui.connectionText.textContent = CONNECTION_LABELS[state];
      ui.connectionDetail.textContent = detail ?? "";
      ui.connectionDetail.hidden = !detail;
      ui.root.dataset.connection = state;
    }

    function showPromptError(text, code = null) {
      ui.promptError.replaceChildren(text);
      if (code) {
        ui.promptError.append(" ", element("code", "error-code", code));
      }
      ui.promptError.hidden = false;
    }

    function clearPromptError() {
      ui.promptError.replaceChildren();
      ui.promptError.hidden = true;
      ui.prompt.removeAttribute("aria-invalid");
    }

    // --- Token ---

    function scheduleRenewal(afterMs) {
      clearTimeout(renewTimer);
      renewTimer = setTimeout(() => {
        if (!destroyed) renewToken().catch(() => {});
      }, afterMs);
    }

    /** Asks the host for a new token; one renewal at a time. */
    function renewToken() {
      if (tokenRenewal) return tokenRenewal;
      tokenRenewal = (async () => {
        try {
          const fresh = readIssuedToken(await options.getToken());
          if (destroyed) return;
          tokenState = fresh;
          scheduleRenewal(renewAfter(fresh.expiresAt));
        } catch (error) {
          if (!destroyed) {
            scheduleRenewal(TOKEN_RETRY_MS);
            emit("error", { code: "token_unavailable", message: String(error?.message ?? error), requestId: null });
          }
          throw error;
        } finally {
          tokenRenewal = null;
        }
      })();
      return tokenRenewal;
    }

    async function currentToken() {
      if (!tokenState || tokenState.expiresAt - Date.now() < TOKEN_EXPIRY_GUARD_MS) {
        await renewToken();
      }
      return tokenState.token;
    }

    /**
     * Drops the cached token when the server returns 401 for it, so the next currentToken() requests a new one from
     * getToken. A browser hides the status of a rejected WebSocket upgrade, so the status of a plain GET with the same
     * token decides. A request that fails on the network keeps the token.
     */
    async function dropTokenIfRejected() {
      const checked = tokenState;
      if (!checked) return;
      let status;
      try {
        const response = await fetch(`${baseUrl}/api/me/usage`, {
          headers: { Accept: "application/json", Authorization: `Bearer ${checked.token}` },
          cache: "no-store",
          credentials: "omit",
        });
        status = response.status;
      } catch {
        return;
      }
      if (status === 401 && tokenState === checked) {
        tokenState = null;
      }
    }

    /** Returns the token for a connect or reconnect attempt. The hub client calls it before each attempt. */
    async function tokenForConnect() {
      if (verifyTokenBeforeConnect) {
        verifyTokenBeforeConnect = false;
        await dropTokenIfRejected();
      }
      return currentToken();
    }

    async function apiGet(path) {
      const response = await fetch(`${baseUrl}${path}`, {
        headers: { Accept: "application/json", Authorization: `Bearer ${await currentToken()}` },
        cache: "no-store",
        credentials: "omit",
      });
      const data = await response.json().catch(() => null);
      if (!response.ok) {
        const error = new Error(data?.message || `The server returned HTTP ${response.status}.`);
        error.status = response.status;
        throw error;
      }
      return data;
    }

    // --- Hub connection ---

    function buildConnection() {
      const hub = new signalR.HubConnectionBuilder()
        // The token travels in a header or the query string, never in cookies, and a page on another origin may only
        // call Ingress without credentials. Without cookies a load balancer's affinity cookie cannot pin SignalR's
        // negotiate request and the connection to one Ingress instance, so such a page opens the WebSocket at once.
        .withUrl(`${baseUrl}/hubs/addon`, {
          accessTokenFactory: () => tokenForConnect(),
          withCredentials: false,
          ...(new URL(baseUrl, window.location.href).origin === window.location.origin
            ? {}
            : { skipNegotiation: true, transport: signalR.HttpTransportType.WebSockets }),
        })
        .withAutomaticReconnect({
          nextRetryDelayInMilliseconds: (context) => {
            // Null ends automatic reconnecting, and onclose hands a rejected connection to connectWithRetry, which
            // shows the server's reason and waits longer.
            if (rejection) return null;
            verifyTokenBeforeConnect = true;
            return RECONNECT_DELAYS_MS[Math.min(context.previousRetryCount, RECONNECT_DELAYS_MS.length - 1)];
          },
        })
        .configureLogging(signalR.LogLevel.Warning)
        .build();

      hub.on("PromptPiece", (payload) => dispatch("piece", payload));
      hub.on("PromptCompleted", (payload) => dispatch("completed", payload));
      hub.on("PromptFailed", (payload) => dispatch("failed", payload));
      hub.on("AllowanceThreshold", (payload) => {
        if (hub === connection) showThreshold(payload);
      });
      // The server sends this right after the handshake and then closes the connection, so hub.start() either fails
      // or the connection closes just after it opened.
      hub.on("ConnectionRejected", (payload) => {
        if (hub === connection) rejection = payload ?? {};
      });

      // Each callback checks that its connection is still the current one, so a stopped old one changes nothing.
      hub.onreconnecting(() => {
        if (hub !== connection) return;
        setConnectionState("reconnecting", "The connection dropped. Reconnecting… Answers on their way are picked up when it is back.");
        for (const entry of pendingEntries()) {
          setEntryNote(entry, "Connection lost. Waiting to reconnect…");
        }
        updateControls();
      });
      hub.onreconnected(() => {
        if (hub !== connection) return;
        setConnectionState("connected");
        announce("Connection restored.");
        updateControls();
        recoverPendingAnswers();
      });
      hub.onclose(() => {
        if (hub !== connection) return;
        // Reconnecting gives up only after a ConnectionRejected, so anything else is a close the server requested.
        // Both open a fresh connection, in a later task. @microsoft/signalr 10.0.11 calls onclose from inside its
        // stop(), which then clears the transport of a start made here. That WebSocket never sends the hub handshake
        // and stays open until the server's handshake timeout (15 s by default) rejects it.
        setTimeout(() => connectWithRetry(hub, { reconnect: true }), 0);
      });
      return hub;
    }

    async function start() {
      setConnectionState("connecting");
      try {
        await ensureSignalR(baseUrl);
      } catch {
        setConnectionState("disconnected", FAILURE_SENTENCES.signalr_missing);
        emit("error", { code: "signalr_missing", message: FAILURE_SENTENCES.signalr_missing, requestId: null });
        return;
      }
      if (destroyed) return;
      const hub = buildConnection();
      connection = hub;
      await connectWithRetry(hub);
    }

    /** Shows why the server rejected the connection and waits before the next attempt. */
    async function waitAfterRejection(rejected) {
      const seconds = rejected.retryAfterSeconds;
      const pause = typeof seconds === "number" && seconds > 0 ? seconds * 1000 : REJECTED_RETRY_MS;
      const reason = typeof rejected.message === "string" && rejected.message !== ""
        ? rejected.message
        : CONNECTION_REJECTED_SENTENCE;
      setConnectionState("disconnected", `${reason} The assistant tries again in ${Math.round(pause / 1000)} s.`);
      updateControls();
      await delay(pause);
    }

    async function connectWithRetry(hub, { reconnect = false } = {}) {
      for (let attempt = 0; hub === connection; attempt++) {
        const rejected = rejection;
        if (rejected) {
          rejection = null;
          await waitAfterRejection(rejected);
          if (hub !== connection) return;
        }
        if (attempt > 0 || reconnect) verifyTokenBeforeConnect = true;
        if (rejected || (attempt === 0 && !reconnect)) {
          setConnectionState("connecting");
        } else {
          setConnectionState("reconnecting", "The connection dropped. Reconnecting…");
        }
        updateControls();
        try {
          await hub.start();
        } catch (error) {
          if (hub !== connection) return;
          // The next iteration shows the server's reason instead of the client's "stopped before the handshake".
          if (rejection) continue;
          const pause = RECONNECT_DELAYS_MS[Math.min(attempt + 1, RECONNECT_DELAYS_MS.length - 1)];
          setConnectionState("disconnected",
            `Could not connect (${error.message}). Trying again in ${Math.max(1, Math.round(pause / 1000))} s.`);
          await delay(pause);
          continue;
        }
        if (hub !== connection) return;
        setConnectionState("connected");
        updateControls();
        refreshUsage(null);
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
        if (!entry.requestId) continue;
        let result;
        try {
          result = await apiGet(`/api/prompts/${encodeURIComponent(entry.requestId)}`);
        } catch (error) {
          if (isFinal(entry)) continue;
          setEntryNote(entry, error.status === 404
            ? "The connection dropped while this answer was on its way, and the server kept no copy. " +
              "If it does not appear soon, stop it and send the question again."
            : `The answer could not be fetched after the reconnect (${error.message}). It still appears if the server sends it.`);
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

    // --- Usage and allowance ---

    function number(value) {
      return typeof value === "number" ? value.toLocaleString(locale) : "?";
    }

    /** Reads the user's allowance; with an answer's usage it also raises the usage event. */
    async function refreshUsage(answer) {
      let me = null;
      try {
        me = await apiGet("/api/me/usage");
      } catch {
        // The per-answer figures below still stand; the monthly line keeps its last value.
      }
      if (destroyed) return;
      if (me) {
        const hasAllowance = typeof me.monthlyTokenAllowance === "number";
        ui.usage.textContent = hasAllowance
          ? `This month: ${number(me.usedTokens)} tokens used, ${number(me.remainingTokens)} left of ${number(me.monthlyTokenAllowance)}.`
          : `This month: ${number(me.usedTokens)} tokens used.`;
        ui.usage.hidden = false;
        ui.root.dataset.remainingTokens = hasAllowance ? String(me.remainingTokens) : "";
      }
      if (answer) {
        emit("usage", {
          requestId: answer.requestId,
          promptTokens: answer.usage?.promptTokens ?? null,
          completionTokens: answer.usage?.completionTokens ?? null,
          totalTokens: answer.usage?.totalTokens ?? null,
          usedTokens: me?.usedTokens ?? null,
          remainingTokens: me?.remainingTokens ?? null,
          monthlyTokenAllowance: me?.monthlyTokenAllowance ?? null,
        });
      }
    }

    function showThreshold(payload) {
      const detail = {
        usedTokens: payload?.usedTokens ?? null,
        monthlyTokens: payload?.monthlyTokens ?? null,
        thresholdPercent: payload?.thresholdPercent ?? null,
        period: payload?.period ?? null,
      };
      ui.thresholdBanner.textContent =
        `You have used ${number(detail.usedTokens)} of your ${number(detail.monthlyTokens)} tokens this month ` +
        `(more than ${number(detail.thresholdPercent)} %).`;
      ui.thresholdBanner.hidden = false;
      announce(ui.thresholdBanner.textContent);
      emit("allowanceThreshold", detail);
    }

    // --- Conversation ---

    function isFinal(entry) {
      return entry.state === "answered" || entry.state === "failed" || entry.state === "stopped";
    }

    function pendingEntries() {
      const pending = [...entries.values()].filter((entry) => !isFinal(entry));
      if (activeEntry && !activeEntry.requestId && !isFinal(activeEntry)) pending.push(activeEntry);
      return pending;
    }

    function describeInput(input) {
      if (!input.action) return input.prompt;
      const label = ACTION_LABELS[input.action];
      let detail = "";
      if (input.action === "change_tone") {
        detail = ` (${input.tone})`;
      } else if (input.action === "translate") {
        detail = ` to ${input.language}`;
      }
      return `${label}${detail}: “${input.text}”`;
    }

    function createEntry(input) {
      const item = element("li", "turn");
      const question = element("div", "turn-question");
      const questionText = element("p");
      questionText.append(element("span", "visually-hidden", "You asked: "), describeInput(input));
      question.append(questionText);

      const answer = element("article", "turn-answer");
      answer.setAttribute("aria-label", "Answer");
      const header = element("div", "turn-answer-header");
      const badge = element("span");
      const time = element("time");
      const now = new Date();
      time.dateTime = now.toISOString();
      time.textContent = formatTime(now, locale);
      header.append(element("span", "turn-author", "Assistant"), " ", badge, " ", time);

      const text = element("div", "answer-text");
      text.hidden = true;
      const error = element("p", "answer-error");
      error.hidden = true;
      const note = element("p", "answer-note");
      note.hidden = true;
      const meta = element("p", "answer-meta");
      meta.hidden = true;
      const tools = element("div", "actions aoe-answer-actions");
      tools.hidden = true;
      const insert = element("button", "small", "Insert");
      insert.type = "button";
      tools.append(insert);
      answer.append(header, text, error, note, meta, tools);
      item.append(question, answer);
      ui.conversation.append(item);
      ui.empty.hidden = true;

      const entry = {
        item, answer, badge, tools, textElement: text, errorElement: error, noteElement: note, metaElement: meta,
        requestId: null, state: "sending", text: "", attempt: 0, restartNote: null, nextSequence: 0, heldPieces: new Map(),
      };
      insert.addEventListener("click", () => insertAnswer(entry));
      setEntryState(entry, "sending");
      item.scrollIntoView({ block: "nearest" });
      return entry;
    }

    function insertAnswer(entry) {
      if (typeof options.onInsert !== "function") return;
      options.onInsert(entry.text);
      emit("inserted", { text: entry.text, requestId: entry.requestId });
      announce("Answer inserted into the editor.");
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
        if (entry === activeEntry) activeEntry = null;
        setEntryNote(entry, null);
      }
      updateControls();
    }

    function setEntryNote(entry, text) {
      entry.noteElement.textContent = text ?? "";
      entry.noteElement.hidden = !text;
    }

    function renderText(entry) {
      entry.textElement.textContent = entry.text;
      entry.textElement.hidden = entry.text === "";
    }

    /**
     * Appends pieces in sequence order; a piece seen before, or older than the text shown, is a duplicate. A piece
     * of a newer run (the server restarted the answer after an interruption) replaces the text of the older run.
     */
    function applyPiece(entry, payload) {
      const sequence = payload.sequence;
      const attempt = Number.isInteger(payload.attempt) ? payload.attempt : 1;
      if (!Number.isInteger(sequence) || attempt < entry.attempt) return;
      if (attempt > entry.attempt) {
        if (entry.text !== "") entry.restartNote = "The answer was interrupted and started again.";
        entry.attempt = attempt;
        entry.text = "";
        entry.nextSequence = 0;
        entry.heldPieces.clear();
      }
      if (sequence < entry.nextSequence || entry.heldPieces.has(sequence)) return;
      entry.heldPieces.set(sequence, typeof payload.text === "string" ? payload.text : "");
      while (entry.heldPieces.has(entry.nextSequence)) {
        entry.text += entry.heldPieces.get(entry.nextSequence);
        entry.heldPieces.delete(entry.nextSequence);
        entry.nextSequence++;
      }
      if (entry.state !== "streaming") setEntryState(entry, "streaming");
      setEntryNote(entry, entry.restartNote ?? null);
      renderText(entry);
    }

    function formatUsage(usage) {
      if (!usage) return null;
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
      entry.tools.hidden = entry.text === "" || typeof options.onInsert !== "function";
      setEntryState(entry, "answered");
      announce(`Answer complete${usage ? `, ${usage}` : ""}.`);
      emit("answer", { text: entry.text, requestId: entry.requestId });
      refreshUsage({ requestId: entry.requestId, usage: payload.usage });
    }

    function failEntry(entry, failure) {
      if (failure.code === "cancelled") {
        stopEntry(entry);
        return;
      }
      const sentence = describeFailure(failure);
      entry.errorElement.replaceChildren(sentence);
      if (failure.code) {
        entry.errorElement.append(" ", element("code", "error-code", failure.code));
      }
      entry.errorElement.hidden = false;
      entry.textElement.classList.add("is-partial");
      setEntryState(entry, "failed");
      announce(`The assistant could not answer. ${sentence}`);
      emit("error", { code: failure.code ?? null, message: sentence, requestId: entry.requestId });
    }

    /** Ends an entry at once here; the server is told separately. Later events for it are ignored. */
    function stopEntry(entry) {
      if (isFinal(entry)) return;
      entry.metaElement.textContent = entry.text === "" ? "Stopped before the answer began." : "Stopped. The answer above is incomplete.";
      entry.metaElement.hidden = false;
      entry.textElement.classList.add("is-partial");
      setEntryState(entry, "stopped");
      announce("Answer stopped.");
    }

    /** Routes a hub event to its entry, or keeps it until SubmitPrompt has returned that request id. */
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

    function sendBlocker() {
      if (activeEntry) return "Wait for the current answer, or stop it with Stop or Esc.";
      if (!isConnected()) return "The assistant is not connected yet. Wait until it shows Connected.";
      return null;
    }

    function updateControls() {
      const busy = activeEntry !== null || !isConnected();
      ui.stopButton.disabled = activeEntry === null;
      ui.sendButton.disabled = busy;
      ui.regenerateButton.disabled = busy || lastInput === null;
      for (const button of Object.values(ui.actionButtons)) {
        button.disabled = busy || selection.trim() === "";
      }
    }

    async function send(input) {
      clearPromptError();
      const blocker = sendBlocker();
      if (blocker) {
        showPromptError(blocker);
        return;
      }
      lastInput = input;
      const entry = createEntry(input);
      activeEntry = entry;
      updateControls();

      let reply;
      try {
        reply = await connection.invoke("SubmitPrompt", { ...input, stream: true });
      } catch (error) {
        reply = hubFailure(error);
      }
      if (!reply?.requestId) {
        if (entry.state === "stopped") return;
        const failure = { code: reply?.code ?? null, message: reply?.message ?? "", retryAfterSeconds: reply?.retryAfterSeconds };
        failEntry(entry, failure);
        if (!input.action && (failure.code === "prompt_too_long" || failure.code === "invalid_request")) {
          ui.prompt.value = input.prompt;
        }
        return;
      }

      const requestId = normalizeId(String(reply.requestId));

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

    function sendPrompt() {
      const text = ui.prompt.value;
      if (text.trim() === "") {
        showPromptError("Type a question first.");
        ui.prompt.setAttribute("aria-invalid", "true");
        ui.prompt.focus();
        return;
      }
      if (sendBlocker()) {
        showPromptError(sendBlocker());
        return;
      }
      ui.prompt.value = "";
      ui.prompt.focus();
      send({ prompt: text });
    }

    function sendAction(action) {
      const input = { action, text: selection };
      if (action === "change_tone") input.tone = ui.toneSelect.value;
      if (action === "translate") {
        const language = ui.languageInput.value.trim();
        if (language === "") {
          showPromptError("Enter the language to translate into, such as German.");
          ui.languageInput.focus();
          return;
        }
        input.language = language;
      }
      send(input);
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
      if (entry.requestId) cancelOnServer(entry.requestId);
      ui.prompt.focus();
    }

    // --- Wiring ---

    ui.form.addEventListener("submit", (event) => {
      event.preventDefault();
      sendPrompt();
    });
    ui.stopButton.addEventListener("click", stopActive);
    ui.regenerateButton.addEventListener("click", () => {
      if (lastInput) send(lastInput);
    });
    ui.actionButtons.shorten.addEventListener("click", () => sendAction("shorten"));
    ui.actionButtons.expand.addEventListener("click", () => sendAction("expand"));
    ui.actionButtons.fix_grammar.addEventListener("click", () => sendAction("fix_grammar"));
    ui.actionButtons.change_tone.addEventListener("click", () => sendAction("change_tone"));
    ui.actionButtons.translate.addEventListener("click", () => sendAction("translate"));
    ui.prompt.addEventListener("keydown", (event) => {
      // Cmd+Enter is the macOS form of Ctrl+Enter.
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        ui.form.requestSubmit();
      }
    });
    ui.root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && activeEntry) {
        event.preventDefault();
        stopActive();
      }
    });

    setConnectionState("disconnected");
    updateControls();
    start();

    return {
      /** Adds a handler for one of the events; returns a function that removes it. */
      on(name, handler) {
        if (!handlers.has(name)) throw new RangeError(`Unknown event "${name}". Events: ${EVENTS.join(", ")}.`);
        handlers.get(name).add(handler);
        return () => handlers.get(name).delete(handler);
      },
      /** Tells the add-on which text the user selected in the host's editor; the preset actions work on it. */
      setSelection(text) {
        selection = typeof text === "string" ? text : "";
        ui.selectionText.textContent = selection.trim() === ""
          ? "Select text in the editor to shorten, expand, fix, restyle or translate it."
          : selection;
        ui.selectionText.classList.toggle("hint", selection.trim() === "");
        updateControls();
      },
      /** Moves keyboard focus to the prompt box. */
      focus() {
        ui.prompt.focus();
      },
      /** Closes the connection, stops token renewal and removes the add-on from the element. */
      async destroy() {
        destroyed = true;
        clearTimeout(renewTimer);
        clearTimeout(announceTimer);
        const hub = connection;
        connection = null;
        ui.root.remove();
        if (hub) await hub.stop();
      },
    };
  }

  window.AddOnEvents = Object.freeze({ mount });
})();
