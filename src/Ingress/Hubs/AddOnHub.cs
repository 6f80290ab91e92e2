using System.Globalization;
using System.Security.Claims;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>Payload of the client method <c>PromptCompleted</c>.</summary>
public sealed record AnswerPayload(Guid RequestId, string Text, string FinishReason, UsagePayload Usage);

public sealed record UsagePayload(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>Payload of the client method <c>PromptPiece</c>: consecutive sequence numbers from 0 per request.</summary>
public sealed record PiecePayload(Guid RequestId, int Sequence, string Text);

/// <summary>
/// Result of <c>SubmitPrompt</c>: the request id that the prompt's result will carry, or the stable error code,
/// message and retry time of a rejected prompt.
/// </summary>
public sealed record SubmitResult(Guid? RequestId, string? Code = null, string? Message = null, int? RetryAfterSeconds = null);

/// <summary>Payload of the client method <c>PromptFailed</c>.</summary>
public sealed record FailurePayload(Guid RequestId, string Code, string Message, int? RetryAfterSeconds);

/// <summary>
/// The add-on's connection. Results go to the user, not to the connection, so a reconnected client with a new
/// connection id still receives answers to prompts it sent before the drop.
/// </summary>
[Authorize(AuthenticationSchemes = AuthSchemes.UserToken)]
public sealed class AddOnHub(
    PromptSubmitter submitter, PromptCanceller canceller, UserConnections connections, IOptions<PromptOptions> options, ILogger<AddOnHub> logger)
    : Hub
{
    public const string Path = "/hubs/addon";

    /// <summary>Client method that receives the reason a connection is closed right after it opens.</summary>
    public const string ConnectionRejected = "ConnectionRejected";

    public override async Task OnConnectedAsync()
    {
        int limit = options.Value.MaxConnectionsPerUser;
        if (!connections.TryAdd(Context, limit))
        {
            string appId = Context.User?.FindFirstValue(AuthSchemes.AppIdClaim) ?? "";
            Log.TooManyConnections(logger, appId, limit);
            await Clients.Caller.SendAsync(ConnectionRejected, new SubmitResult(null, ErrorCodes.TooManyConnections, string.Create(
                CultureInfo.InvariantCulture, $"You have {limit} connections open already. Close another tab or window of the add-on and reconnect.")));
            Context.Abort();
            return;
        }

        await base.OnConnectedAsync();
    }

    public override Task OnDisconnectedAsync(Exception? exception)
    {
        connections.Remove(Context);
        return base.OnDisconnectedAsync(exception);
    }

    /// <summary>
    /// Sends a prompt over the connection and returns the request id that the prompt's result will carry. A rejected
    /// prompt throws a HubException whose message is "code: message". <see cref="SubmitPrompt"/> returns the same as data.
    /// </summary>
    public async Task<Guid> SendPrompt(PromptInput? input)
    {
        var result = await SubmitPrompt(input);
        return result.RequestId ?? throw new HubException($"{result.Code}: {result.Message}");
    }

    /// <summary>
    /// Sends a prompt over the connection. A rejection comes back as a result with its code and retry time rather
    /// than as an error, so a client reads it without parsing text, and a user's mistakes are not logged as
    /// server errors.
    /// </summary>
    public async Task<SubmitResult> SubmitPrompt(PromptInput? input)
    {
        if (input is null)
        {
            return new SubmitResult(null, ErrorCodes.InvalidRequest, "The prompt is missing: send an object such as {\"prompt\": \"...\"}.");
        }

        var submission = await submitter.SubmitAsync(Context.User!, input, Context.GetHttpContext()!);
        return submission.Error is { } error
            ? new SubmitResult(null, error.Code, error.Message, submission.RetryAfterSeconds)
            : new SubmitResult(submission.RequestId);
    }

    /// <summary>
    /// Stops a running request of this user, which then ends with PromptFailed and code "cancelled". Returns the
    /// request id, or the code, message and retry time when the user sent too many cancels.
    /// </summary>
    public async Task<SubmitResult> CancelPrompt(Guid requestId) =>
        await canceller.CancelAsync(Context.User!, requestId, Context.ConnectionAborted) is { } retryAfter
            ? new SubmitResult(null, ErrorCodes.RateLimited, PromptCanceller.TooManyCancels, retryAfter)
            : new SubmitResult(requestId);
}
