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

/// <summary>Payload of the client method <c>PromptFailed</c>.</summary>
public sealed record FailurePayload(Guid RequestId, string Code, string Message, int? RetryAfterSeconds);

/// <summary>
/// The add-on's connection. Results go to the user, not to the connection, so a reconnected client with a new
/// connection id still receives answers to prompts it sent before the drop.
/// </summary>
[Authorize(AuthenticationSchemes = AuthSchemes.UserToken)]
public sealed class AddOnHub(PromptSubmitter submitter, PromptCanceller canceller) : Hub
{
    public const string Path = "/hubs/addon";

    /// <summary>Sends a prompt over the connection; returns the request id that the answer will carry.</summary>
    public async Task<Guid> SendPrompt(PromptInput input)
    {
        var submission = await submitter.SubmitAsync(Context.User!, input, Context.GetHttpContext()!);
        return submission.Error is { } error
            ? throw new HubException($"{error.Code}: {error.Message}")
            : submission.RequestId!.Value;
    }

    /// <summary>Stops a running answer of this user; the answer then ends with PromptFailed and code "cancelled".</summary>
    public Task CancelPrompt(Guid requestId) => canceller.CancelAsync(Context.User!, requestId, Context.ConnectionAborted);
}
