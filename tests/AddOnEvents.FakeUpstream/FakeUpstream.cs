using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// In-process fake of the OpenAI chat completions and models API, listening on a real loopback socket.
/// It records every request, rejects keys not registered with <see cref="AcceptKey"/>, and replies with queued
/// <see cref="ScriptedResponse"/>s, then with <see cref="Responder"/>, then with an echo of the last user message.
/// </summary>
public sealed class FakeUpstream : IAsyncDisposable
{
    public const string ChatCompletionsPath = "/v1/chat/completions";
    public const string ModelsPath = "/v1/models";
    public const string ModelId = "gpt-4o-mini";

    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan AbortGrace = TimeSpan.FromMilliseconds(200);

    private readonly WebApplication _app;
    private readonly FakeUpstreamOptions _options;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<string, bool> _acceptedKeys = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<ScriptedResponse> _chatScripts = new();
    private readonly ConcurrentQueue<ScriptedResponse> _modelScripts = new();

    // Guards _requests and _waiters together so that a request is either seen by a waiter's initial scan or
    // offered to that waiter when it arrives, never neither.
    private readonly Lock _gate = new();
    private readonly List<RecordedRequest> _requests = [];
    private readonly List<RequestWaiter> _waiters = [];

    private Func<RecordedRequest, ScriptedResponse?>? _responder;
    private int _requestSequence;
    private int _completionSequence;
    private int _disposed;

    private FakeUpstream(FakeUpstreamOptions options)
    {
        _options = options;
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrelCore();
        builder.WebHost.UseUrls(string.Create(CultureInfo.InvariantCulture, $"http://{options.Host}:{options.Port}"));
        builder.WebHost.ConfigureKestrel(options =>
        {
            // A test that reads a stream slowly on purpose must not make Kestrel drop the connection for a low data rate.
            options.Limits.MinResponseDataRate = null;
        });

        _app = builder.Build();
        _app.Run(HandleAsync);
    }

    /// <summary>Root of the fake API with a trailing slash, such as http://127.0.0.1:41234/.</summary>
    public Uri BaseUrl { get; private set; } = null!;

    /// <summary>
    /// Reply function for chat completion requests that no queued script covers. A null result falls back to the
    /// echo, and /v1/models requests never reach it.
    /// </summary>
    public Func<RecordedRequest, ScriptedResponse?>? Responder
    {
        get => Volatile.Read(ref _responder);
        set => Volatile.Write(ref _responder, value);
    }

    /// <summary>Snapshot of all requests received so far, in arrival order.</summary>
    public IReadOnlyList<RecordedRequest> Requests
    {
        get
        {
            lock (_gate)
            {
                return _requests.ToArray();
            }
        }
    }

    /// <summary>Number of enqueued scripts not yet consumed, for both endpoints.</summary>
    public int QueuedResponseCount => _chatScripts.Count + _modelScripts.Count;

    /// <summary>Starts the fake on a free loopback port.</summary>
    public static Task<FakeUpstream> StartAsync() => StartAsync(new FakeUpstreamOptions());

    /// <summary>Starts the fake with the given address, latency, pace and bookkeeping.</summary>
    public static async Task<FakeUpstream> StartAsync(FakeUpstreamOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var upstream = new FakeUpstream(options);
        try
        {
            await upstream._app.StartAsync();
            var addresses = upstream._app.Services.GetRequiredService<IServer>().Features
                .GetRequiredFeature<IServerAddressesFeature>().Addresses;
            string address = addresses.Single();
            upstream.BaseUrl = new Uri(address.TrimEnd('/') + "/");
            return upstream;
        }
        catch
        {
            await upstream.DisposeAsync();
            throw;
        }
    }

    /// <summary>Adds a bearer token that the fake accepts. Any other token, or none, gets a 401.</summary>
    public void AcceptKey(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        _acceptedKeys[key] = true;
    }

    /// <summary>Stops accepting a key, as when a developer revokes it at OpenAI.</summary>
    public void RejectKey(string key) => _acceptedKeys.TryRemove(key, out _);

    /// <summary>
    /// Queues a reply for the next request to <see cref="ScriptedResponse.Endpoint"/> that passes the key check.
    /// Replies to each endpoint are consumed in the order they were queued.
    /// </summary>
    public void Enqueue(ScriptedResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        var queue = response.Endpoint == FakeEndpoint.Models ? _modelScripts : _chatScripts;
        queue.Enqueue(response);
    }

    /// <summary>
    /// Returns the first request, already received or arriving later, for which <paramref name="match"/> is true.
    /// Throws <see cref="TimeoutException"/> listing the requests received when none matches in time.
    /// </summary>
    public async Task<RecordedRequest> WaitForRequestAsync(Func<RecordedRequest, bool> match, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(match);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

        var waiter = new RequestWaiter(match);
        lock (_gate)
        {
            // The predicate runs under the lock so the earliest matching request wins even during a burst.
            bool completed = false;
            foreach (var request in _requests)
            {
                if (waiter.TryComplete(request))
                {
                    completed = true;
                    break;
                }
            }

            if (!completed)
            {
                _waiters.Add(waiter);
            }
        }

        try
        {
            return await waiter.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException(
                $"No request matching the predicate reached the fake upstream within {timeout}. " +
                $"Received: [{string.Join("; ", Requests)}]");
        }
        finally
        {
            lock (_gate)
            {
                _waiters.Remove(waiter);
            }
        }
    }

    /// <summary>Counts received requests whose path equals <paramref name="path"/>, whatever their key or outcome.</summary>
    public int CountRequests(string path)
    {
        lock (_gate)
        {
            return _requests.Count(request => request.Path == path);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync();
        lock (_gate)
        {
            foreach (var waiter in _waiters)
            {
                waiter.Cancel();
            }

            _waiters.Clear();
        }

        using (var timeout = new CancellationTokenSource(StopTimeout))
        {
            try
            {
                await _app.StopAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                // Handlers abort their replies when _stopping fires, so a connection still open here closes with the app.
            }
        }

        await _app.DisposeAsync();
        _stopping.Dispose();
    }

    /// <summary>Masks a key the way OpenAI quotes it in errors: the first 3 and the last 4 characters.</summary>
    internal static string MaskKey(string key) =>
        key[..Math.Min(3, key.Length)] + "..." + key[Math.Max(0, key.Length - 4)..];

    internal static string ErrorBody(string message, string type, string? code, string? param = null) =>
        new JsonObject
        {
            ["error"] = new JsonObject
            {
                ["message"] = message,
                ["type"] = type,
                ["param"] = param,
                ["code"] = code,
            },
        }.ToJsonString();

    private async Task HandleAsync(HttpContext context)
    {
        var clock = RequestClock.Start();
        var request = await RecordAsync(context);
        using var cancellation = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping.Token);
        try
        {
            if (request.Aborted)
            {
                return;
            }

            await RespondAsync(context, request, clock, cancellation.Token);
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            if (context.RequestAborted.IsCancellationRequested)
            {
                request.MarkAborted();
            }
            else
            {
                // The fake is shutting down, so cut the reply instead of letting the host wait for it.
                context.Abort();
            }
        }
        catch (IOException)
        {
            // A connection the client reset can fail a read or write with an IOException instead of a cancellation.
            request.MarkAborted();
        }
        finally
        {
            request.MarkCompleted();
        }
    }

    private async Task<RecordedRequest> RecordAsync(HttpContext context)
    {
        var httpRequest = context.Request;
        var receivedAt = DateTimeOffset.UtcNow;

        string body = "";
        bool bodyAborted = false;
        try
        {
            using var reader = new StreamReader(httpRequest.Body, Encoding.UTF8);
            body = await reader.ReadToEndAsync(context.RequestAborted);
        }
        catch (Exception exception) when (exception is IOException or OperationCanceledException)
        {
            bodyAborted = true;
        }

        JsonObject? json = null;
        if (body.Length > 0)
        {
            try
            {
                json = JsonNode.Parse(body) as JsonObject;
            }
            catch (JsonException)
            {
                // Recorded as-is. The default chat reply rejects it with OpenAI's parse error.
            }
        }

        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var header in httpRequest.Headers)
        {
            headers[header.Key] = header.Value.ToString();
        }

        if (!_options.RecordRequests)
        {
            var unrecorded = new RecordedRequest(
                Interlocked.Increment(ref _requestSequence),
                httpRequest.Method,
                httpRequest.Path.Value ?? "/",
                ReadBearerKey(httpRequest),
                headers,
                body,
                json,
                receivedAt);
            if (bodyAborted)
            {
                unrecorded.MarkAborted();
            }

            return unrecorded;
        }

        lock (_gate)
        {
            var request = new RecordedRequest(
                ++_requestSequence,
                httpRequest.Method,
                httpRequest.Path.Value ?? "/",
                ReadBearerKey(httpRequest),
                headers,
                body,
                json,
                receivedAt);
            if (bodyAborted)
            {
                request.MarkAborted();
            }

            _requests.Add(request);
            _waiters.RemoveAll(waiter => waiter.TryComplete(request));
            return request;
        }
    }

    private async Task RespondAsync(HttpContext context, RecordedRequest request, RequestClock clock, CancellationToken cancellationToken)
    {
        if (_options.Latency > TimeSpan.Zero)
        {
            await Task.Delay(_options.Latency, cancellationToken);
        }

        if (request.BearerKey is null || (!_options.AcceptAnyKey && !_acceptedKeys.ContainsKey(request.BearerKey)))
        {
            string message = request.BearerKey is null
                ? "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                : $"Incorrect API key provided: {MaskKey(request.BearerKey)}";
            string? code = request.BearerKey is null ? null : "invalid_api_key";
            await WriteAsync(context, request, 401, ErrorBody(message, "invalid_request_error", code), cancellationToken);
            return;
        }

        bool isChat = request.Path == ChatCompletionsPath && HttpMethods.IsPost(request.Method);
        bool isModels = request.Path == ModelsPath && HttpMethods.IsGet(request.Method);
        if (!isChat && !isModels)
        {
            string body = ErrorBody($"Invalid URL ({request.Method} {request.Path})", "invalid_request_error", null);
            await WriteAsync(context, request, 404, body, cancellationToken);
            return;
        }

        var script = isChat ? NextChatScript(request) : NextModelsScript();
        if (script is not null)
        {
            await SendScriptedAsync(context, request, script, isChat, clock, cancellationToken);
        }
        else if (isModels)
        {
            await WriteAsync(context, request, 200, ModelsBody(), cancellationToken);
        }
        else if (ValidateChatBody(request) is { } invalidBody)
        {
            await WriteAsync(context, request, 400, invalidBody, cancellationToken);
        }
        else
        {
            var completion = new Completion(200, "Echo: " + (request.LastUserMessage ?? ""), "stop", null, null, TimeSpan.Zero, null);
            await SendCompletionAsync(context, request, completion, clock, cancellationToken);
        }
    }

    private ScriptedResponse? NextChatScript(RecordedRequest request) =>
        _chatScripts.TryDequeue(out var script) ? script : Responder?.Invoke(request);

    private ScriptedResponse? NextModelsScript() =>
        _modelScripts.TryDequeue(out var script) ? script : null;

    private async Task SendScriptedAsync(
        HttpContext context,
        RecordedRequest request,
        ScriptedResponse script,
        bool isChat,
        RequestClock clock,
        CancellationToken cancellationToken)
    {
        if (script.Delay > TimeSpan.Zero)
        {
            await Task.Delay(script.Delay, cancellationToken);
        }

        bool streamsCompletion = isChat && script.Body is null && request.Stream;
        if (script.DisconnectAfterPieces is not null && !streamsCompletion)
        {
            context.Abort();
            return;
        }

        foreach (var (name, value) in script.Headers)
        {
            context.Response.Headers[name] = value;
        }

        if (script.RawChunks is not null)
        {
            request.SetStatusCode(script.StatusCode);
            context.Response.StatusCode = script.StatusCode;
            context.Response.ContentType = script.ContentType;
            foreach (byte[] chunk in script.RawChunks)
            {
                await context.Response.Body.WriteAsync(chunk, cancellationToken);
                await context.Response.Body.FlushAsync(cancellationToken);
                await Task.Delay(script.PieceDelay, cancellationToken);
            }
        }
        else if (script.Body is not null)
        {
            await WriteAsync(context, request, script.StatusCode, script.Body, cancellationToken, script.ContentType);
        }
        else if (!isChat)
        {
            await WriteAsync(context, request, script.StatusCode, ModelsBody(), cancellationToken);
        }
        else
        {
            string text = script.Text ?? string.Concat(script.StreamPieces ?? []);
            var completion = new Completion(
                script.StatusCode,
                text,
                script.FinishReason,
                script.Usage,
                script.StreamPieces,
                script.PieceDelay,
                script.DisconnectAfterPieces);
            await SendCompletionAsync(context, request, completion, clock, cancellationToken);
        }
    }

    private async Task SendCompletionAsync(
        HttpContext context,
        RecordedRequest request,
        Completion completion,
        RequestClock clock,
        CancellationToken cancellationToken)
    {
        var usage = completion.Usage ?? CountUsage(request, completion.Text);
        string id = "chatcmpl-fake-" + Interlocked.Increment(ref _completionSequence).ToString(CultureInfo.InvariantCulture);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string model = request.Model ?? ModelId;

        if (!request.Stream)
        {
            string text = completion.Text;
            if (_options.ReportTiming)
            {
                text += clock.Marker();
                context.Response.Headers[FakeUpstreamOptions.TimingHeader] = clock.ElapsedMicroseconds.ToString(CultureInfo.InvariantCulture);
            }

            var body = new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion",
                ["created"] = created,
                ["model"] = model,
                ["choices"] = new JsonArray
                {
                    new JsonObject
                    {
                        ["index"] = 0,
                        ["message"] = new JsonObject
                        {
                            ["role"] = "assistant",
                            ["content"] = text,
                            ["refusal"] = null,
                        },
                        ["logprobs"] = null,
                        ["finish_reason"] = completion.FinishReason,
                    },
                },
                ["usage"] = UsageJson(usage),
                ["system_fingerprint"] = "fp_fake",
            };
            await WriteAsync(context, request, completion.StatusCode, body.ToJsonString(), cancellationToken);
            return;
        }

        var response = context.Response;
        request.SetStatusCode(completion.StatusCode);
        response.StatusCode = completion.StatusCode;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        if (_options.ReportTiming)
        {
            response.Headers[FakeUpstreamOptions.TimingHeader] = clock.ElapsedMicroseconds.ToString(CultureInfo.InvariantCulture);
        }

        await response.StartAsync(cancellationToken);

        // OpenAI sends "usage": null in every chunk when the request asked for the final usage chunk.
        JsonObject Chunk(JsonObject? delta, string? finishReason)
        {
            var chunk = new JsonObject
            {
                ["id"] = id,
                ["object"] = "chat.completion.chunk",
                ["created"] = created,
                ["model"] = model,
                ["system_fingerprint"] = "fp_fake",
                ["choices"] = delta is null
                    ? new JsonArray()
                    : new JsonArray
                    {
                        new JsonObject
                        {
                            ["index"] = 0,
                            ["delta"] = delta,
                            ["logprobs"] = null,
                            ["finish_reason"] = finishReason,
                        },
                    },
            };
            if (request.IncludeUsage)
            {
                chunk["usage"] = null;
            }

            return chunk;
        }

        await WriteEventAsync(response, Chunk(new JsonObject { ["role"] = "assistant", ["content"] = "", ["refusal"] = null }, null), cancellationToken);

        var pieces = completion.Pieces ?? SplitAtWhitespace(completion.Text);
        long firstPieceAt = Stopwatch.GetTimestamp();
        for (int index = 0; index < pieces.Count; index++)
        {
            if (completion.DisconnectAfterPieces == index)
            {
                await AbortAfterGraceAsync(context, cancellationToken);
                return;
            }

            await PaceAsync(completion, index, firstPieceAt, cancellationToken);
            await WriteEventAsync(response, Chunk(new JsonObject { ["content"] = pieces[index] }, null), cancellationToken);
        }

        if (completion.DisconnectAfterPieces >= pieces.Count)
        {
            await AbortAfterGraceAsync(context, cancellationToken);
            return;
        }

        if (_options.ReportTiming)
        {
            await PaceAsync(completion, pieces.Count, firstPieceAt, cancellationToken);
            await WriteEventAsync(response, Chunk(new JsonObject { ["content"] = clock.Marker() }, null), cancellationToken);
        }

        await WriteEventAsync(response, Chunk(new JsonObject(), completion.FinishReason), cancellationToken);
        if (request.IncludeUsage)
        {
            var usageChunk = Chunk(null, null);
            usageChunk["usage"] = UsageJson(usage);
            await WriteEventAsync(response, usageChunk, cancellationToken);
        }

        await WriteEventAsync(response, "[DONE]", cancellationToken);
    }

    /// <summary>
    /// Waits before content piece <paramref name="index"/>: the script's fixed pause, or else the configured pace
    /// counted from the first piece, so that timer overshoot does not accumulate over a long stream.
    /// </summary>
    private async Task PaceAsync(Completion completion, int index, long firstPieceAt, CancellationToken cancellationToken)
    {
        if (index == 0)
        {
            return;
        }

        if (completion.PieceDelay > TimeSpan.Zero)
        {
            await Task.Delay(completion.PieceDelay, cancellationToken);
            return;
        }

        if (_options.PiecesPerSecond > 0)
        {
            var due = TimeSpan.FromSeconds(index / _options.PiecesPerSecond) - Stopwatch.GetElapsedTime(firstPieceAt);
            if (due > TimeSpan.Zero)
            {
                await Task.Delay(due, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Aborts the connection after a pause that lets the flushed events reach the client. Without the pause the
    /// client saw a connection reset on Linux loopback before reading the events, and lost them.
    /// </summary>
    private static async Task AbortAfterGraceAsync(HttpContext context, CancellationToken cancellationToken)
    {
        // NOTE: the pause length is a guess that works on an idle loopback. A slower reader can still lose pieces.
        await Task.Delay(AbortGrace, cancellationToken);
        context.Abort();
    }

    private static async Task WriteEventAsync(HttpResponse response, JsonObject chunk, CancellationToken cancellationToken) =>
        await WriteEventAsync(response, chunk.ToJsonString(), cancellationToken);

    private static async Task WriteEventAsync(HttpResponse response, string data, CancellationToken cancellationToken)
    {
        await response.WriteAsync("data: " + data + "\n\n", cancellationToken);
        await response.Body.FlushAsync(cancellationToken);
    }

    private static async Task WriteAsync(
        HttpContext context,
        RecordedRequest request,
        int statusCode,
        string body,
        CancellationToken cancellationToken,
        string contentType = "application/json")
    {
        request.SetStatusCode(statusCode);
        context.Response.StatusCode = statusCode;
        context.Response.ContentType = contentType;
        await context.Response.WriteAsync(body, cancellationToken);
    }

    private static string ModelsBody() =>
        new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray
            {
                new JsonObject
                {
                    ["id"] = ModelId,
                    ["object"] = "model",
                    ["created"] = 0,
                    ["owned_by"] = "fake",
                },
            },
        }.ToJsonString();

    /// <summary>Returns OpenAI's 400 body for a chat request the default reply cannot serve, or null when it is valid.</summary>
    private static string? ValidateChatBody(RecordedRequest request)
    {
        JsonNode? json;
        try
        {
            json = request.Body.Length == 0 ? null : JsonNode.Parse(request.Body);
        }
        catch (JsonException)
        {
            json = null;
        }

        if (json is not JsonObject body)
        {
            return ErrorBody(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
                "invalid_request_error",
                null);
        }

        if (request.Model is null)
        {
            return ErrorBody("you must provide a model parameter", "invalid_request_error", null);
        }

        if (body["messages"] is not JsonArray messages)
        {
            return ErrorBody("Missing required parameter: 'messages'.", "invalid_request_error", "missing_required_parameter", "messages");
        }

        if (messages.Count == 0)
        {
            return ErrorBody(
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
                "invalid_request_error",
                "empty_array",
                "messages");
        }

        return null;
    }

    private static ScriptedUsage CountUsage(RecordedRequest request, string answer)
    {
        int promptTokens = request.Messages.Sum(message => CountWords(message.Content));
        int completionTokens = CountWords(answer);
        return new ScriptedUsage(promptTokens, completionTokens, promptTokens + completionTokens);
    }

    private static JsonObject UsageJson(ScriptedUsage usage) => new()
    {
        ["prompt_tokens"] = usage.PromptTokens,
        ["completion_tokens"] = usage.CompletionTokens,
        ["total_tokens"] = usage.TotalTokens,
    };

    private static int CountWords(string text)
    {
        int words = 0;
        bool inWord = false;
        foreach (char character in text)
        {
            bool isWordCharacter = !char.IsWhiteSpace(character);
            if (isWordCharacter && !inWord)
            {
                words++;
            }

            inWord = isWordCharacter;
        }

        return words;
    }

    /// <summary>Splits text into word pieces that keep their leading whitespace, so the pieces concatenate back to it.</summary>
    private static List<string> SplitAtWhitespace(string text)
    {
        var pieces = new List<string>();
        int start = 0;
        for (int index = 1; index < text.Length; index++)
        {
            if (char.IsWhiteSpace(text[index]) && !char.IsWhiteSpace(text[index - 1]))
            {
                pieces.Add(text[start..index]);
                start = index;
            }
        }

        if (start < text.Length)
        {
            pieces.Add(text[start..]);
        }

        return pieces;
    }

    private static string? ReadBearerKey(HttpRequest request)
    {
        string authorization = request.Headers.Authorization.ToString();
        const string scheme = "Bearer ";
        if (!authorization.StartsWith(scheme, StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        string key = authorization[scheme.Length..].Trim();
        return key.Length == 0 ? null : key;
    }

    private sealed record Completion(
        int StatusCode,
        string Text,
        string FinishReason,
        ScriptedUsage? Usage,
        IReadOnlyList<string>? Pieces,
        TimeSpan PieceDelay,
        int? DisconnectAfterPieces);

    /// <summary>When a request reached the handler, as a wall-clock time for other processes and as a monotonic start.</summary>
    private readonly record struct RequestClock(long ReceivedUnixMicroseconds, long StartTimestamp)
    {
        public long ElapsedMicroseconds => Stopwatch.GetElapsedTime(StartTimestamp).Ticks / TimeSpan.TicksPerMicrosecond;

        public static RequestClock Start() =>
            new((DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) / TimeSpan.TicksPerMicrosecond, Stopwatch.GetTimestamp());

        public string Marker() => string.Create(CultureInfo.InvariantCulture, $" [fake rx={ReceivedUnixMicroseconds} us={ElapsedMicroseconds}]");
    }

    private sealed class RequestWaiter(Func<RecordedRequest, bool> match)
    {
        private readonly TaskCompletionSource<RecordedRequest> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<RecordedRequest> Task => _result.Task;

        /// <summary>Completes the waiter when <paramref name="request"/> matches, or faults it when the predicate throws.</summary>
        public bool TryComplete(RecordedRequest request)
        {
            try
            {
                return match(request) && _result.TrySetResult(request);
            }
            catch (Exception exception)
            {
                return _result.TrySetException(exception);
            }
        }

        public void Cancel() => _result.TrySetCanceled();
    }
}
