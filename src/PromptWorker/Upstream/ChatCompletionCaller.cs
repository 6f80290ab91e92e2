using System.Net;
using System.Text.Json;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;
using Betalgo.Ranul.OpenAI.ObjectModels.RequestModels;
using Betalgo.Ranul.OpenAI.ObjectModels.ResponseModels;

namespace AddOnEvents.PromptWorker.Upstream;

/// <summary>The end of one upstream call: an answer, or a stable error code with a message written here.</summary>
public sealed record ChatOutcome(string? Text, string? FinishReason, TokenUsage? Usage, string? ErrorCode, string? ErrorMessage)
{
    public bool Succeeded => ErrorCode is null;

    public static ChatOutcome Answer(string text, string finishReason, TokenUsage usage) => new(text, finishReason, usage, null, null);

    public static ChatOutcome Failure(string code, string message) => new(null, null, null, code, message);
}

/// <summary>
/// Calls the chat completions API with one app's key and maps every answer, error and exception to a
/// <see cref="ChatOutcome"/>. Upstream error text never leaves this class, because it can quote the key.
/// </summary>
public sealed partial class ChatCompletionCaller(UpstreamClientFactory upstream, ILogger<ChatCompletionCaller> logger)
{
    public async Task<ChatOutcome> CompleteAsync(ProviderKey key, PromptRequested prompt, CancellationToken cancellationToken)
    {
        var request = new ChatCompletionCreateRequest
        {
            Model = prompt.Model,
            MaxCompletionTokens = prompt.MaxOutputTokens,
            Messages = prompt.Messages.Select(turn => new ChatMessage(turn.Role, turn.Content)).ToList(),
        };

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(upstream.Options.TimeoutSeconds));
        try
        {
            var service = upstream.Create(key.Reveal());
            var response = await service.ChatCompletion.CreateCompletion(request, cancellationToken: timeout.Token);
            return response.Successful ? MapAnswer(response) : MapError(prompt, response.HttpStatusCode);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "timeout");
            return ChatOutcome.Failure(ErrorCodes.UpstreamTimeout,
                $"The AI provider did not answer within {upstream.Options.TimeoutSeconds} seconds. Try again later.");
        }
        catch (HttpRequestException)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "connection");
            return ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable, "The AI provider could not be reached. Try again later.");
        }
        catch (JsonException)
        {
            LogUpstreamFailed(prompt.RequestId, prompt.AppId, "unreadable body");
            return ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an answer that could not be read.");
        }
    }

    private static ChatOutcome MapAnswer(ChatCompletionCreateResponse response)
    {
        var choice = response.Choices?.FirstOrDefault();
        if (choice?.Message is null)
        {
            return ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an answer without any choices.");
        }

        if (choice.FinishReason == "content_filter")
        {
            return ChatOutcome.Failure(ErrorCodes.ContentFiltered, "The AI provider's content filter stopped this answer.");
        }

        var usage = response.Usage is { } u
            ? new TokenUsage(u.PromptTokens, u.CompletionTokens ?? 0, u.TotalTokens)
            : new TokenUsage(0, 0, 0);
        return ChatOutcome.Answer(choice.Message.Content ?? "", choice.FinishReason ?? "stop", usage);
    }

    private ChatOutcome MapError(PromptRequested prompt, HttpStatusCode status)
    {
        LogUpstreamFailed(prompt.RequestId, prompt.AppId, ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture));
        return (int)status switch
        {
            401 or 403 => ChatOutcome.Failure(ErrorCodes.UpstreamAuthFailed,
                "The AI provider rejected this app's API key. The developer must replace it in the console."),
            404 => ChatOutcome.Failure(ErrorCodes.ModelNotFound, $"The AI provider does not offer the model '{prompt.Model}'."),
            400 or 422 => ChatOutcome.Failure(ErrorCodes.UpstreamBadRequest, "The AI provider rejected the request as invalid."),
            429 => ChatOutcome.Failure(ErrorCodes.UpstreamRateLimited, "The AI provider's rate limit for this app was reached. Try again later."),
            408 or 504 => ChatOutcome.Failure(ErrorCodes.UpstreamTimeout, "The AI provider timed out. Try again later."),
            >= 500 => ChatOutcome.Failure(ErrorCodes.UpstreamUnavailable, "The AI provider is unavailable. Try again later."),
            _ => ChatOutcome.Failure(ErrorCodes.UpstreamInvalidResponse, "The AI provider sent an unexpected answer."),
        };
    }

    [LoggerMessage(EventId = 3101, Level = LogLevel.Warning,
        Message = "Upstream call for request {RequestId} of app {AppId} failed: {Failure}")]
    private partial void LogUpstreamFailed(Guid requestId, string appId, string failure);
}
