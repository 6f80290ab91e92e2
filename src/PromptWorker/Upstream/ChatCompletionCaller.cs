using System.Diagnostics;
using System.Text;
using System.Text.Json;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;
using Betalgo.Ranul.OpenAI.ObjectModels.RequestModels;
using Betalgo.Ranul.OpenAI.ObjectModels.ResponseModels;

namespace AddOnEvents.PromptWorker.Upstream;

/// <summary>
/// The end of one upstream call: an answer, or a stable error code with a message written here.
/// <see cref="Retryable"/> marks failures that another attempt may fix (5xx, connection errors, timeouts, 429).
/// </summary>
public sealed record ChatOutcome(
    string? Text,
    string? FinishReason,
    TokenUsage? Usage,
    string? ErrorCode,
    string? ErrorMessage,
    bool Retryable = false,
    TimeSpan? RetryAfter = null)
{
    public bool Succeeded => ErrorCode is null;

    public static ChatOutcome Answer(string text, string finishReason, TokenUsage usage) => new(text, finishReason, usage, null, null);

    public static ChatOutcome Failure(string code, string message, bool retryable = false, TimeSpan? retryAfter = null) =>
        new(null, null, null, code, message, retryable, retryAfter);
}

/// <summary>
/// Calls the chat completions API once with one app's key and maps every answer, error and exception to a
/// <see cref="ChatOutcome"/>. Upstream error text never leaves this class, because it can quote the key.
/// </summary>
public sealed partial class ChatCompletionCaller(
    UpstreamClientFactory upstream, TimeProvider clock, AddOnEventsMetrics metrics, ILogger<ChatCompletionCaller> logger)
{
    /// <param name="onText">Receives each piece of a streamed answer as it arrives; null asks for a single answer.</param>
    public Task<ChatOutcome> CallAsync(ProviderKey key, PromptRequested prompt, Func<string, Task>? onText, CancellationToken cancellationToken) =>
        CallAsync(key, prompt, attempt: 1, onText, cancellationToken);

    /// <summary>Calls once inside a span of its own, and records the call's duration and outcome.</summary>
    /// <param name="attempt">Number of this attempt at the request, counted from 1, for the span.</param>
    /// <param name="onText">Receives each piece of a streamed answer as it arrives; null asks for a single answer.</param>
    public async Task<ChatOutcome> CallAsync(
        ProviderKey key, PromptRequested prompt, int attempt, Func<string, Task>? onText, CancellationToken cancellationToken)
    {
        // Ids, the model and codes only: the prompt, the answer and the key stay out of the span.
        using var activity = Telemetry.ActivitySource.StartActivity("upstream chat");
        activity?.SetTag("app_id", prompt.AppId);
        activity?.SetTag("request_id", prompt.RequestId);
        activity?.SetTag("model", string.IsNullOrEmpty(prompt.Model) ? upstream.Options.DefaultModel : prompt.Model);
        activity?.SetTag("attempt", attempt);
        activity?.SetTag("stream", onText is not null);
        long started = clock.GetTimestamp();
        string outcome = ErrorCodes.InternalError;
        try
        {
            var result = await CallOnceAsync(key, prompt, onText, cancellationToken);
            outcome = result.ErrorCode ?? AddOnEventsMetrics.Completed;
            return result;
        }
        catch (OperationCanceledException)
        {
            outcome = ErrorCodes.Cancelled;
            throw;
        }
        finally
        {
            metrics.UpstreamCalled(outcome, onText is not null, clock.GetElapsedTime(started));
            activity?.SetTag("outcome", outcome);
            if (outcome != AddOnEventsMetrics.Completed)
            {
                activity?.SetStatus(ActivityStatusCode.Error, outcome);
            }
        }
    }

    private async Task<ChatOutcome> CallOnceAsync(
        ProviderKey key, PromptRequested prompt, Func<string, Task>? onText, CancellationToken cancellationToken)
    {
        bool streaming = onText is not null;
        var request = new ChatCompletionCreateRequest
        {
            Model = string.IsNullOrEmpty(prompt.Model) ? upstream.Options.DefaultModel : prompt.Model,
            MaxCompletionTokens = prompt.MaxOutputTokens,
            Messages = prompt.Messages.Select(turn => new ChatMessage(turn.Role, turn.Content)).ToList(),
            StreamOptions = streaming ? new StreamOptions { IncludeUsage = true } : null,
        };
        ApplySampling(request, prompt.Sampling);

        var info = new UpstreamCallInfo { Streaming = streaming };
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(upstream.Options.TimeoutSeconds));
        try
        {
            var service = upstream.Create(key.Reveal(), info);
            if (!streaming)
            {
                var response = await service.ChatCompletion.CreateCompletion(request, cancellationToken: timeout.Token);
                return response.Successful ? MapAnswer(prompt, response, info) : MapError(prompt, info, response.Error);
            }

            return await StreamAsync(service, request, prompt, info, onText!, timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "timeout");
            return ChatOutcome.Failure(ErrorCodes.UpstreamTimeout,
                $"The AI provider did not answer within {upstream.Options.TimeoutSeconds} seconds. Try again later.", retryable: true);
        }
        catch (UnusableProviderKeyException)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "unusable key");
            return ChatOutcome.Failure(ErrorCodes.KeyInvalid,
                "The app's OpenAI key contains characters that an Authorization header cannot carry. "
                + "The developer must replace it in the console.", retryable: false);
        }
        catch (HttpRequestException)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "connection");
            return info.StatusCode is { } status
                ? MapError(prompt, info, error: null)
                : ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable, "The AI provider could not be reached. Try again later.", retryable: true);
        }
        catch (IOException)
        {
            // A connection that breaks while the body is read, such as in the middle of a stream, ends the read with an
            // HttpIOException, which is not an HttpRequestException.
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "connection lost");
            return ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable,
                "The connection to the AI provider broke before the answer was complete. Try again later.", retryable: true);
        }
        catch (Exception ex) when (ex is JsonException or NotSupportedException or InvalidOperationException)
        {
            // The SDK throws on bodies it cannot parse, such as HTML error pages or empty bodies.
            return info.StatusCode is >= 400 ? MapError(prompt, info, error: null) : Unreadable(prompt);
        }
    }

    private async Task<ChatOutcome> StreamAsync(
        Betalgo.Ranul.OpenAI.Managers.OpenAIService service,
        ChatCompletionCreateRequest request,
        PromptRequested prompt,
        UpstreamCallInfo info,
        Func<string, Task> onText,
        CancellationToken cancellationToken)
    {
        var text = new StringBuilder();
        string? finishReason = null;
        TokenUsage? usage = null;
        await foreach (var chunk in service.ChatCompletion.CreateCompletionAsStream(request, cancellationToken: cancellationToken))
        {
            if (!chunk.Successful)
            {
                // NOTE: Betalgo 9.2.6 reads a failed stream's response outside the handler that observes the call,
                // so the status and Retry-After come from what the SDK itself reports.
                info.StatusCode ??= (int)chunk.HttpStatusCode;
                info.RetryAfter ??= RetryAfterFrom(chunk.HeaderValues?.All);
                return MapError(prompt, info, chunk.Error);
            }

            if (chunk.Usage is { } u)
            {
                usage = new TokenUsage(u.PromptTokens, u.CompletionTokens ?? 0, u.TotalTokens);
            }

            var choice = chunk.Choices?.FirstOrDefault();
            string? piece = choice?.Delta?.Content ?? choice?.Message?.Content;
            if (!string.IsNullOrEmpty(piece))
            {
                text.Append(piece);
                await onText(piece);
            }

            finishReason = choice?.FinishReason ?? finishReason;
        }

        if (info.StatusCode is >= 400)
        {
            return MapError(prompt, info, error: null);
        }

        if (finishReason is null && text.Length == 0)
        {
            return Unreadable(prompt);
        }

        // OpenAI sends a finish reason with the last choice of every completed stream. A stream that closes without one
        // was cut off, for example by a proxy, so the text the user has is not the whole completion.
        if (finishReason is null)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "stream ended early");
            return ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable,
                "The AI provider ended the answer before it was complete. Try again later.", retryable: true);
        }

        string answer = text.ToString();
        // Some OpenAI-compatible servers report no usage, and quotas and allowances must still count the completion.
        return Finish(answer, finishReason, usage ?? TokenEstimate.Of(prompt, answer.Length), info);
    }

    /// <summary>Copies the caller's sampling parameters onto the request, for streamed and non-streamed requests alike.</summary>
    private static void ApplySampling(ChatCompletionCreateRequest request, SamplingOptions? sampling)
    {
        if (sampling is null)
        {
            return;
        }

        request.Temperature = (float?)sampling.Temperature;
        request.TopP = (float?)sampling.TopP;
        request.StopAsList = sampling.Stop?.ToList();
        request.Seed = sampling.Seed;
        request.PresencePenalty = (float?)sampling.PresencePenalty;
        request.FrequencyPenalty = (float?)sampling.FrequencyPenalty;
        request.ResponseFormat = sampling.ResponseFormat switch
        {
            "json_object" => new ResponseFormat { Type = Betalgo.Ranul.OpenAI.Contracts.Enums.ResponseFormat.JsonObject },
            "text" => new ResponseFormat { Type = Betalgo.Ranul.OpenAI.Contracts.Enums.ResponseFormat.Text },
            _ => null,
        };
    }

    private static ChatOutcome MapAnswer(PromptRequested prompt, ChatCompletionCreateResponse response, UpstreamCallInfo info)
    {
        var choice = response.Choices?.FirstOrDefault();
        if (choice?.Message is null)
        {
            return ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an answer without any choices.");
        }

        string answer = choice.Message.Content ?? "";
        var usage = response.Usage is { } u
            ? new TokenUsage(u.PromptTokens, u.CompletionTokens ?? 0, u.TotalTokens)
            : TokenEstimate.Of(prompt, answer.Length);
        return Finish(answer, choice.FinishReason ?? "stop", usage, info);
    }

    private static ChatOutcome Finish(string text, string finishReason, TokenUsage usage, UpstreamCallInfo info)
    {
        if (finishReason == "content_filter")
        {
            return ChatOutcome.Failure(ErrorCodes.ContentFiltered, "The AI provider's content filter stopped this answer.");
        }

        if (info.Refused)
        {
            return ChatOutcome.Failure(ErrorCodes.Refused, "The model declined to answer this prompt.");
        }

        return ChatOutcome.Answer(text, finishReason, usage);
    }

    private TimeSpan? RetryAfterFrom(Dictionary<string, IEnumerable<string>>? headers)
    {
        var value = headers?.FirstOrDefault(h => string.Equals(h.Key, "Retry-After", StringComparison.OrdinalIgnoreCase)).Value?.FirstOrDefault();
        return value is not null && System.Net.Http.Headers.RetryConditionHeaderValue.TryParse(value, out var parsed)
            ? UpstreamResponseObserver.RetryAfter(parsed, clock.GetUtcNow())
            : null;
    }

    private ChatOutcome Unreadable(PromptRequested prompt)
    {
        LogUpstreamFailed(prompt.RequestId, prompt.AppId, "unreadable body");
        return ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an answer that could not be read.");
    }

    private ChatOutcome MapError(PromptRequested prompt, UpstreamCallInfo info, Error? error)
    {

        int status = info.StatusCode ?? 0;
        LogUpstreamFailed(prompt.RequestId, prompt.AppId, status.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return status switch
        {
            401 => ChatOutcome.Failure(ErrorCodes.UpstreamAuthFailed,
                "The AI provider rejected this app's API key. The developer must replace it in the console."),

            // A 403 denies only this request, for example a model the key's project may not use. The key itself
            // was accepted, so it stays active.
            403 => ChatOutcome.Failure(ErrorCodes.UpstreamForbidden,
                $"The AI provider rejected this request with this app's key, for example because the key may not use the model '{prompt.Model}'."),
            404 => ChatOutcome.Failure(ErrorCodes.ModelNotFound, $"The AI provider does not offer the model '{prompt.Model}'."),
            400 or 422 => ChatOutcome.Failure(ErrorCodes.UpstreamBadRequest, "The AI provider rejected the request as invalid."),
            429 when error?.Code == "insufficient_quota" => ChatOutcome.Failure(ErrorCodes.UpstreamQuotaExhausted,
                "The app's account at the AI provider has no quota left. The developer must add credit."),
            429 => ChatOutcome.Failure(ErrorCodes.UpstreamRateLimited, "The AI provider's rate limit for this app was reached. Try again later.",
                retryable: true, retryAfter: info.RetryAfter),
            408 or 504 => ChatOutcome.Failure(ErrorCodes.UpstreamTimeout, "The AI provider timed out. Try again later.", retryable: true),
            >= 500 => ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable, "The AI provider is unavailable. Try again later.", retryable: true),
            _ => ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an unexpected answer."),
        };
    }

    [LoggerMessage(EventId = 3101, Level = LogLevel.Warning,
        Message = "Upstream call for request {RequestId} of app {AppId} failed: {Failure}")]
    private partial void LogUpstreamFailed(Guid requestId, string appId, string failure);
}
