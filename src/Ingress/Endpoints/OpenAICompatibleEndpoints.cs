using System.Security.Claims;
using System.Text.Json;
using System.Text.Json.Serialization;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

public sealed record OpenAIMessage(string? Role, JsonElement Content);

/// <summary>One entry of <c>GET /v1/models</c>, in OpenAI's model object shape.</summary>
public sealed record OpenAIModel(
    string Id,
    [property: JsonPropertyName("object")] string ObjectType,
    long Created,
    [property: JsonPropertyName("owned_by")] string OwnedBy);

public sealed record OpenAIStreamOptions([property: JsonPropertyName("include_usage")] bool? IncludeUsage);

/// <summary>
/// The fields of an OpenAI chat request that AddOnEvents reads. OpenAI's <c>user</c> field is ignored, because the end
/// user is already known from the token and a caller-chosen value must not stand in for it.
/// </summary>
public sealed record OpenAIChatRequest(
    string? Model,
    IReadOnlyList<OpenAIMessage>? Messages,
    bool? Stream,
    [property: JsonPropertyName("max_tokens")] int? MaxTokens,
    [property: JsonPropertyName("max_completion_tokens")] int? MaxCompletionTokens,
    [property: JsonPropertyName("stream_options")] OpenAIStreamOptions? StreamOptions,
    int? N = null,
    JsonElement Tools = default,
    JsonElement Functions = default,
    double? Temperature = null,
    [property: JsonPropertyName("top_p")] double? TopP = null,
    JsonElement Stop = default,
    long? Seed = null,
    [property: JsonPropertyName("presence_penalty")] double? PresencePenalty = null,
    [property: JsonPropertyName("frequency_penalty")] double? FrequencyPenalty = null,
    [property: JsonPropertyName("response_format")] JsonElement ResponseFormat = default,
    bool? Logprobs = null,
    [property: JsonPropertyName("top_logprobs")] JsonElement TopLogprobs = default,
    [property: JsonPropertyName("logit_bias")] JsonElement LogitBias = default);

/// <summary>
/// <c>POST /v1/chat/completions</c> in OpenAI's shape, served through the same bus, workers and keys, so an OpenAI
/// SDK works by changing only its base URL and key (an end-user token, or <c>appId.appSecret</c>).
/// </summary>
public static partial class OpenAICompatibleEndpoints
{
    private static readonly JsonSerializerOptions SnakeCase = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    private const string TimedOut = "The request timed out before a response arrived. Send it again.";

    private const string Restarted =
        "The answer was interrupted and started again on the server, so this stream stops here. Send the request again.";

    private const string MessageShape =
        "Each message needs a role of system, developer, user or assistant and a content that is a string or an array of text parts.";

    public static IEndpointRouteBuilder MapOpenAICompatibleEndpoints(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPost("/v1/chat/completions", CompleteAsync).RequireAuthorization(AuthSchemes.AnyCaller).RequireCors(BrowserOrigins.PolicyName);
        endpoints.MapGet("/v1/models", ListModelsAsync).RequireAuthorization(AuthSchemes.AnyCaller).RequireCors(BrowserOrigins.PolicyName);
        endpoints.MapGet("/v1/models/{id}", GetModelAsync).RequireAuthorization(AuthSchemes.AnyCaller).RequireCors(BrowserOrigins.PolicyName);
        return endpoints;
    }

    /// <summary>
    /// Lists the models the caller's app allows, in OpenAI's list shape, for SDKs and tools that list models
    /// first. An app that allows any model gets only the default one, because the upstream's own list would
    /// cost a call with the developer's key.
    /// </summary>
    private static async Task ListModelsAsync(HttpContext http, AppStore apps, IOptions<PromptOptions> options)
    {
        var models = await FindModelsAsync(http, apps, options.Value);
        if (models is not null)
        {
            await http.Response.WriteAsJsonAsync(new { @object = "list", data = models });
        }
    }

    /// <summary>
    /// Returns one model of the list that <c>GET /v1/models</c> returns, in the same shape, or 404 for any other id.
    /// </summary>
    private static async Task GetModelAsync(string id, HttpContext http, AppStore apps, IOptions<PromptOptions> options)
    {
        var models = await FindModelsAsync(http, apps, options.Value);
        if (models is null)
        {
            return;
        }

        // NOTE: an app that allows any model lists only the default one, so any other id gets 404 here although a
        // chat request may still use it.
        var model = models.FirstOrDefault(m => string.Equals(m.Id, id, StringComparison.Ordinal));
        if (model is null)
        {
            // The id is echoed only when it is shaped like a model name, because the path can contain anything.
            string name = PromptSubmitter.IsModelName(id) ? $"'{id}'" : "with this id";
            await WriteErrorAsync(http, StatusCodes.Status404NotFound, ErrorCodes.ModelNotFound,
                $"The model {name} does not exist or this app may not use it. GET /v1/models lists the models it may use.", param: "model");
            return;
        }

        await http.Response.WriteAsJsonAsync(model);
    }

    /// <summary>
    /// Returns the models the caller's app allows, or null after writing 403 when the app no longer exists.
    /// </summary>
    private static async Task<IReadOnlyList<OpenAIModel>?> FindModelsAsync(HttpContext http, AppStore apps, PromptOptions options)
    {
        string? appId = http.User.FindFirstValue(AuthSchemes.AppIdClaim);
        var app = appId is null ? null : await apps.FindCachedAsync(appId, http.RequestAborted);
        if (app is null)
        {
            await WriteErrorAsync(http, StatusCodes.Status403Forbidden, ErrorCodes.Forbidden, "The app of this credential no longer exists.");
            return null;
        }

        var ids = app.EffectiveLimits.AllowedModels ?? [options.DefaultModel];
        long created = new DateTimeOffset(DateTime.SpecifyKind(app.CreatedAt, DateTimeKind.Utc)).ToUnixTimeSeconds();
        return ids.Select(id => new OpenAIModel(id, "model", created, "openai")).ToList();
    }

    private static async Task CompleteAsync(
        HttpContext http, PromptSubmitter submitter, PendingReplies pending, PromptCanceller canceller, IOptions<PromptOptions> options)
    {
        int outputLimit = options.Value.MaxOutputTokensLimit;
        var (request, error) = await JsonBody.ReadOrFailAsync<OpenAIChatRequest>(http.Request, skipUnknownFields: true, submitter.OpenAIFieldRules);
        if (error is not null)
        {
            await WriteErrorAsync(http, error.Status, error.Code, error.Message, param: error.Field);
            return;
        }

        var (sampling, parameterError) = OpenAISampling.Read(request!);
        if (parameterError is not null)
        {
            await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, parameterError.Message, param: parameterError.Param);
            return;
        }

        bool hasTools = request!.Tools is { ValueKind: not JsonValueKind.Null and not JsonValueKind.Undefined };
        if (hasTools || request.Functions is { ValueKind: not JsonValueKind.Null and not JsonValueKind.Undefined })
        {
            await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "tools and functions are not supported; send the conversation as text messages.", param: hasTools ? "tools" : "functions");
            return;
        }

        if (request.Model is not null && !PromptSubmitter.IsModelName(request.Model))
        {
            await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, PromptSubmitter.InvalidModelMessage,
                param: "model");
            return;
        }

        var turns = new List<ChatTurn>();
        var messages = request.Messages ?? [];
        for (int index = 0; index < messages.Count; index++)
        {
            var message = messages[index];
            var (content, problem) = message?.Role is "system" or "user" or "assistant" or "developer"
                ? ReadContent(message.Content, index)
                : (null, MessageShape);
            if (problem is not null)
            {
                await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, problem, param: "messages");
                return;
            }

            turns.Add(new ChatTurn(message!.Role == "developer" ? "system" : message.Role!, content!));
        }

        var lastUser = turns.LastOrDefault(t => t.Role == "user");
        if (lastUser is null)
        {
            await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, "messages must contain a user message.", param: "messages");
            return;
        }

        int totalCharacters = turns.Sum(t => t.Content.Length);
        if (totalCharacters > options.Value.MaxPromptCharacters)
        {
            await WriteErrorAsync(http, StatusCodes.Status413PayloadTooLarge, ErrorCodes.PromptTooLong, string.Create(
                System.Globalization.CultureInfo.InvariantCulture,
                $"The messages have {totalCharacters} characters in all; the limit is {options.Value.MaxPromptCharacters}. Shorten them."),
                param: "messages");
            return;
        }

        int? maxTokens = request.MaxCompletionTokens ?? request.MaxTokens;
        if (maxTokens is < 1 || maxTokens > outputLimit)
        {
            string field = request.MaxCompletionTokens is null ? "max_tokens" : "max_completion_tokens";
            await WriteErrorAsync(http, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, PromptSubmitter.OutputTokensRange(field, outputLimit), param: field);
            return;
        }

        bool stream = request.Stream ?? false;
        var input = new PromptInput(lastUser.Content, request.Model, maxTokens, stream) { Messages = turns, Sampling = sampling };
        Guid? requestId = null;
        System.Threading.Channels.ChannelReader<object>? reader = null;
        var submission = await submitter.SubmitAsync(http.User, input, http, id =>
        {
            requestId = id;
            reader = pending.Register(id);
        });
        try
        {
            if (submission.Error is { } rejected)
            {
                await WriteErrorAsync(http, submission.Status, rejected.Code, rejected.Message, submission.RetryAfterSeconds,
                    param: rejected.Code == ErrorCodes.ModelNotAllowed ? "model" : null);
                return;
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
            timeout.CancelAfter(TimeSpan.FromSeconds(options.Value.TimeToLiveSeconds));
            string model = request.Model ?? options.Value.DefaultModel;
            try
            {
                if (stream)
                {
                    if (!await StreamAsync(http, reader!, requestId!.Value, model, request.StreamOptions?.IncludeUsage == true, timeout.Token))
                    {
                        // The client has what it can use of this answer, so the new run would be paid for in vain.
                        await canceller.CancelAbandonedAsync(http.User, requestId.Value, CancellationToken.None);
                    }
                }
                else
                {
                    await AnswerAsync(http, reader!, requestId!.Value, model, timeout.Token);
                }
            }
            catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
            {
                // The client went away: stop the upstream request instead of paying for an answer nobody reads.
                await canceller.CancelAbandonedAsync(http.User, requestId!.Value, CancellationToken.None);
            }
            catch (OperationCanceledException) when (!http.Response.HasStarted)
            {
                await WriteErrorAsync(http, StatusCodes.Status504GatewayTimeout, ErrorCodes.RequestExpired, TimedOut);
            }
            catch (OperationCanceledException)
            {
                await EndStreamWithErrorAsync(http, ErrorCodes.RequestExpired, TimedOut, CancellationToken.None);
            }
        }
        finally
        {
            if (requestId is { } id)
            {
                pending.Remove(id);
            }
        }
    }

    private static async Task AnswerAsync(
        HttpContext http, System.Threading.Channels.ChannelReader<object> reader, Guid requestId, string model, CancellationToken cancellationToken)
    {
        while (true)
        {
            switch (await reader.ReadAsync(cancellationToken))
            {
                case PromptCompleted done:
                    await http.Response.WriteAsJsonAsync(new
                    {
                        id = "chatcmpl-" + requestId.ToString("N"),
                        @object = "chat.completion",
                        created = done.CompletedAt.ToUnixTimeSeconds(),
                        model,
                        choices = new[] { new { index = 0, message = new { role = "assistant", content = done.Text }, finish_reason = done.FinishReason } },
                        usage = Usage(done.Usage),
                    }, SnakeCase, cancellationToken);
                    return;
                case PromptFailed failed:
                    await WriteFailureAsync(http, failed);
                    return;
            }
        }
    }

    /// <summary>
    /// Streams the completion as server-sent events. The status and headers go out with the first event only, so a
    /// failure that arrives before any piece still gets its own HTTP status and Retry-After header instead of an
    /// error event inside a 200. A failure after that point can only be an error event in the stream.
    /// </summary>
    /// <returns>False when the stream ended while the prompt still runs, because the answer restarted.</returns>
    private static async Task<bool> StreamAsync(
        HttpContext http, System.Threading.Channels.ChannelReader<object> reader, Guid requestId, string model, bool includeUsage,
        CancellationToken cancellationToken)
    {
        string id = "chatcmpl-" + requestId.ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var order = new PieceOrder();
        bool roleSent = false;

        // OpenAI names the role in the first delta only, and SDKs that assemble messages take it from there.
        object Delta(string text)
        {
            if (roleSent)
            {
                return new { content = text };
            }

            roleSent = true;
            return new { role = "assistant", content = text };
        }

        while (true)
        {
            switch (await reader.ReadAsync(cancellationToken))
            {
                case PromptPiece piece:
                    string ready = order.Accept(piece.Attempt, piece.Sequence, piece.Text);
                    if (order.Restarted)
                    {
                        await EndStreamWithErrorAsync(http, ErrorCodes.ServiceUnavailable, Restarted, cancellationToken);
                        return false;
                    }

                    if (ready.Length > 0)
                    {
                        StartEventStream(http.Response);
                        await WriteEventAsync(http, Chunk(id, created, model, Delta(ready), null), cancellationToken);
                    }

                    break;
                case PromptCompleted done:
                    StartEventStream(http.Response);
                    if (order.Remainder(done.Text) is not { } remainder)
                    {
                        await EndStreamWithErrorAsync(http, ErrorCodes.ServiceUnavailable, Restarted, cancellationToken);
                        return true;
                    }

                    if (remainder.Length > 0 || !roleSent)
                    {
                        // A non-streamed or partly streamed answer: send what the pieces did not carry.
                        await WriteEventAsync(http, Chunk(id, created, model, Delta(remainder), null), cancellationToken);
                    }

                    await WriteEventAsync(http, Chunk(id, created, model, new { }, done.FinishReason), cancellationToken);
                    if (includeUsage)
                    {
                        await WriteEventAsync(http, new { id, @object = "chat.completion.chunk", created, model, choices = Array.Empty<object>(), usage = Usage(done.Usage) },
                            cancellationToken);
                    }

                    await http.Response.WriteAsync("data: [DONE]\n\n", cancellationToken);
                    return true;
                case PromptFailed failed when !http.Response.HasStarted:
                    await WriteFailureAsync(http, failed);
                    return true;
                case PromptFailed failed:
                    await EndStreamWithErrorAsync(http, failed.Code, failed.Message, cancellationToken);
                    return true;
            }
        }
    }

    private static object Chunk(string id, long created, string model, object delta, string? finishReason) => new
    {
        id,
        @object = "chat.completion.chunk",
        created,
        model,
        choices = new[] { new { index = 0, delta, finish_reason = finishReason } },
    };

    private static object Usage(TokenUsage usage) => new
    {
        prompt_tokens = usage.PromptTokens,
        completion_tokens = usage.CompletionTokens,
        total_tokens = usage.TotalTokens,
    };

    /// <summary>Sets the event-stream headers, once, before the first event sends them with the status.</summary>
    private static void StartEventStream(HttpResponse response)
    {
        if (!response.HasStarted)
        {
            response.ContentType = "text/event-stream";
            response.Headers.CacheControl = "no-cache";
        }
    }

    private static async Task WriteEventAsync(HttpContext http, object payload, CancellationToken cancellationToken)
    {
        await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload, SnakeCase) + "\n\n", cancellationToken);
        await http.Response.Body.FlushAsync(cancellationToken);
    }

    /// <summary>Ends a stream that already started the way SDKs expect after a failure: an error event, then [DONE].</summary>
    private static async Task EndStreamWithErrorAsync(HttpContext http, string code, string message, CancellationToken cancellationToken)
    {
        await WriteEventAsync(http, new { error = new { message, type = ApiErrors.OpenAIErrorType, code } }, cancellationToken);
        await http.Response.WriteAsync("data: [DONE]\n\n", cancellationToken);
    }

    /// <summary>Writes a worker's failure as an error response, the same way for streamed and non-streamed requests.</summary>
    private static Task WriteFailureAsync(HttpContext http, PromptFailed failed) =>
        WriteErrorAsync(http, StatusFor(failed.Code), failed.Code, failed.Message, failed.RetryAfterSeconds);

    /// <summary>
    /// Writes an error in OpenAI's shape, which OpenAI SDKs parse, with the stable code of this product, the request
    /// field at fault in <c>param</c> when there is one, a Retry-After header in seconds when the failure has a retry
    /// time, and <c>x-should-retry: false</c> when a retry cannot fix it.
    /// </summary>
    private static async Task WriteErrorAsync(
        HttpContext http, int status, string code, string message, int? retryAfterSeconds = null, string? param = null)
    {
        http.Response.StatusCode = status;
        if (retryAfterSeconds is { } retryAfter)
        {
            http.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        ApiErrors.MarkNotRetryable(http.Response, status, code);
        await http.Response.WriteAsJsonAsync(new { error = new { message, type = ApiErrors.OpenAIErrorType, code, param } });
    }

    /// <summary>
    /// Reads the text of <c>messages[index].content</c>, which is either a string or an array of text parts. The
    /// parts are joined with newlines. Returns the text, or the error message when the content has another shape.
    /// </summary>
    private static (string? Text, string? Error) ReadContent(JsonElement content, int index)
    {
        if (content.ValueKind == JsonValueKind.String)
        {
            return (content.GetString(), null);
        }

        if (content.ValueKind != JsonValueKind.Array)
        {
            return (null, MessageShape);
        }

        var texts = new List<string>();
        foreach (var part in content.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object
                || !part.TryGetProperty("type", out var type)
                || type.ValueKind != JsonValueKind.String)
            {
                return (null, MessageShape);
            }

            string partType = type.GetString()!;
            if (partType != "text")
            {
                return (null, UnsupportedPart(partType, index));
            }

            if (!part.TryGetProperty("text", out var text) || text.ValueKind != JsonValueKind.String)
            {
                return (null, MessageShape);
            }

            texts.Add(text.GetString()!);
        }

        return (string.Join('\n', texts), null);
    }

    private static string UnsupportedPart(string partType, int index)
    {
        string description = OpenAISampling.IsTypeName(partType) ? $"a part of type '{partType}'" : "a part whose type is not 'text'";
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"messages[{index}].content contains {description}, which is not supported. Only text parts are accepted.");
    }

    private static int StatusFor(string code) => code switch
    {
        ErrorCodes.RateLimited or ErrorCodes.QuotaExceeded or ErrorCodes.UpstreamRateLimited or ErrorCodes.UpstreamQuotaExhausted =>
            StatusCodes.Status429TooManyRequests,
        ErrorCodes.UpstreamForbidden or ErrorCodes.Forbidden or ErrorCodes.AddonInactive => StatusCodes.Status403Forbidden,
        ErrorCodes.ModelNotFound => StatusCodes.Status404NotFound,
        ErrorCodes.UpstreamBadRequest or ErrorCodes.ContentFiltered or ErrorCodes.Refused or ErrorCodes.InvalidRequest => StatusCodes.Status400BadRequest,
        ErrorCodes.NoKeyConfigured or ErrorCodes.KeyInvalid or ErrorCodes.KeyUnreadable or ErrorCodes.UpstreamAuthFailed =>
            StatusCodes.Status424FailedDependency,
        ErrorCodes.UpstreamTimeout or ErrorCodes.RequestExpired => StatusCodes.Status504GatewayTimeout,
        ErrorCodes.Cancelled => 499,
        _ => StatusCodes.Status502BadGateway,
    };
}
