'use strict';
// Calls Ingress through the official OpenAI Node.js SDK, configured only with a base URL and an API key, and
// writes what the SDK returned as one JSON object on stdout for OpenAISdkTests.
//
// Usage: node openai-sdk-client.js complete|stream|models|error
// Environment: OPENAI_BASE_URL (Ingress's /v1 address), OPENAI_API_KEY (an end-user token or appId.appSecret),
// SDK_PROMPT (the user message of the chat scenarios). The key comes from the environment so that it never shows
// in a process list.
//
// NOTE: openai 7.55.0 declares Node.js >= 22 in its engines field, so npm ci warns on older versions. The suite
// has run these scenarios on Node.js 20.20, but a later SDK release may start to use what only Node.js 22 has.

const OpenAI = require('openai');

const TIMEOUT_MILLISECONDS = 60_000;

function createClient() {
  const baseURL = process.env.OPENAI_BASE_URL;
  const apiKey = process.env.OPENAI_API_KEY;
  if (!baseURL || !apiKey) {
    throw new Error('OPENAI_BASE_URL and OPENAI_API_KEY must be set.');
  }

  // The SDK's own retry defaults stay in place, because the tests check that Ingress's x-should-retry header
  // switches them off.
  return new OpenAI({ baseURL, apiKey, timeout: TIMEOUT_MILLISECONDS });
}

function chatMessages() {
  const prompt = process.env.SDK_PROMPT;
  if (!prompt) {
    throw new Error('SDK_PROMPT must be set for the chat scenarios.');
  }

  return [{ role: 'user', content: prompt }];
}

async function complete(client) {
  const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: chatMessages() });
  const choice = completion.choices[0];
  return {
    id: completion.id,
    object: completion.object,
    model: completion.model,
    choiceCount: completion.choices.length,
    role: choice.message.role,
    content: choice.message.content,
    finishReason: choice.finish_reason,
    usage: completion.usage,
  };
}

async function stream(client) {
  const chunks = await client.chat.completions.create({
    model: 'gpt-4o-mini',
    messages: chatMessages(),
    stream: true,
    stream_options: { include_usage: true },
  });

  const deltas = [];
  const ids = new Set();
  let finishReason = null;
  let usage = null;
  let error = null;
  try {
    for await (const chunk of chunks) {
      ids.add(chunk.id);
      if (chunk.usage) {
        usage = chunk.usage;
      }

      for (const choice of chunk.choices) {
        if (typeof choice.delta?.content === 'string' && choice.delta.content.length > 0) {
          deltas.push(choice.delta.content);
        }

        if (choice.finish_reason) {
          finishReason = choice.finish_reason;
        }
      }
    }
  } catch (caught) {
    // An error event after the first chunk is the only way a stream that already started can report a failure.
    if (!(caught instanceof OpenAI.APIError)) {
      throw caught;
    }

    error = describeError(caught);
  }

  return { deltas, content: deltas.join(''), finishReason, usage, idCount: ids.size, error };
}

async function models(client) {
  const ids = [];
  const objects = [];
  for await (const model of client.models.list()) {
    ids.push(model.id);
    objects.push(model.object);
  }

  return { ids, objects };
}

// Names the most specific typed error class of the SDK that the error is an instance of.
function errorClassName(error) {
  const classes = [
    'AuthenticationError',
    'PermissionDeniedError',
    'RateLimitError',
    'BadRequestError',
    'NotFoundError',
    'ConflictError',
    'UnprocessableEntityError',
    'InternalServerError',
    'APIConnectionTimeoutError',
    'APIConnectionError',
    'APIError',
  ];
  return classes.find((name) => error instanceof OpenAI[name]) ?? error.constructor.name;
}

async function expectError(client) {
  try {
    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: chatMessages() });
    return { succeeded: true, content: completion.choices[0]?.message?.content ?? null };
  } catch (error) {
    if (!(error instanceof OpenAI.APIError)) {
      throw error;
    }

    return { succeeded: false, ...describeError(error) };
  }
}

function describeError(error) {
  return {
    errorClass: errorClassName(error),
    status: error.status ?? null,
    code: error.code ?? null,
    type: error.type ?? null,
    message: error.message,
    shouldRetryHeader: error.headers?.get('x-should-retry') ?? null,
  };
}

const scenarios = { complete, stream, models, error: expectError };

async function main() {
  const name = process.argv[2];
  const scenario = scenarios[name];
  if (!scenario) {
    throw new Error(`Unknown scenario '${name}'. Expected one of: ${Object.keys(scenarios).join(', ')}.`);
  }

  const result = await scenario(createClient());
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error) => {
  // Only the class and message, because other properties of an SDK error can contain response headers.
  process.stderr.write(`openai-sdk-client failed: ${error?.constructor?.name}: ${error?.message}\n`);
  process.exitCode = 1;
});
