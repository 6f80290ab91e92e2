using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Prompts;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>Payload of the client method <c>PromptCompleted</c>.</summary>
public sealed record AnswerPayload(Guid RequestId, string Text, string FinishReason, UsagePayload Usage);

public sealed record UsagePayload(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>Payload of the client method <c>PromptPiece</c>: consecutive sequence numbers from 0 per request.</summary>
public sealed record PiecePayload(Guid RequestId, int Sequence, string Text);

/// <summary>
/// Result of <c>SubmitPrompt</c>: the request id that the answer will carry, or the stable error code, message and
/// retry time of a rejected prompt.
/// </summary>
public sealed record SubmitResult(Guid? RequestId, string? Code = null, string? Message = null, int? RetryAfterSeconds = null);

/// <summary>Payload of the client method <c>PromptFailed</c>.</summary>
public sealed record FailurePayload(Guid RequestId, string Code, string Message, int? RetryAfterSeconds);

/// <summary>
/// The add-on's connection. Results go to the user, not to the connection, so a reconnected client with a new
/// connection id still receives answers to prompts it sent before the drop.
/// </summary>
[Authorize(AuthenticationSchemes = AuthSchemes.UserToken)]
public sealed class AddOnHub(PromptSubmitter submitter, PromptCanceller canceller, UserConnections connections) : Hub
{
    public const string Path = "/hubs/addon";

    public override Task OnConnectedAsync()
    {
        connections.Add(Context);
        return base.OnConnectedAsync();
    }

    public override Task OnDisconnectedAsync(Exception? exception)
    {
        connections.Remove(Context);
        return base.OnDisconnectedAsync(exception);
    }

    /// <summary>
    /// Sends a prompt over the connection and returns the request id that the answer will carry. A rejected prompt
    /// throws a HubException whose message is "code: message"; <see cref="SubmitPrompt"/> returns the same as data.
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

    /// <summary>Stops a running answer of this user; the answer then ends with PromptFailed and code "cancelled".</summary>
    public Task CancelPrompt(Guid requestId) => canceller.CancelAsync(Context.User!, requestId, Context.ConnectionAborted);
}
