using System.Globalization;
using System.Security.Claims;
using System.Text.Json;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Endpoints;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>Payload of the client method <c>PromptCompleted</c>.</summary>
public sealed record AnswerPayload(Guid RequestId, string Text, string FinishReason, UsagePayload Usage);

public sealed record UsagePayload(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>Payload of the client method <c>PromptPiece</c>: consecutive sequence numbers from 0 per run of the request.</summary>
/// <param name="Attempt">Higher in a run that restarted the answer after an interruption, whose pieces replace the earlier ones.</param>
public sealed record PiecePayload(Guid RequestId, int Sequence, string Text, int Attempt);

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
    public async Task<Guid> SendPrompt(JsonElement input)
    {
        var result = await SubmitPrompt(input);
        return result.RequestId ?? throw new HubException($"{result.Code}: {result.Message}");
    }

    /// <summary>
    /// Sends a prompt over the connection. A rejection comes back as a result with its code and retry time rather
    /// than as an error, so a client reads it without parsing text, and a user's mistakes are not logged as
    /// server errors.
    /// </summary>
    /// <param name="input">
    /// Any JSON value, so that an argument of the wrong shape gets a rejection with a code in place of SignalR's
    /// generic error. It is read with the rules of the body of <c>POST /api/prompts</c>.
    /// </param>
    /// <remarks>
    /// NOTE: a call with no argument or more than one never reaches this method or the hub filters. SignalR's JSON
    /// protocol rejects it while binding the arguments, and the dispatcher returns its generic error
    /// "Failed to invoke 'SubmitPrompt' due to an error on the server."
    /// </remarks>
    public async Task<SubmitResult> SubmitPrompt(JsonElement input)
    {
        if (input.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined)
        {
            return new SubmitResult(null, ErrorCodes.InvalidRequest, "The prompt is missing: send an object such as {\"prompt\": \"...\"}.");
        }

        var (prompt, problem) = await JsonBody.ReadArgumentAsync<PromptInput>(input, submitter.FieldRules);
        if (problem is not null)
        {
            return new SubmitResult(null, problem.Code, problem.Message);
        }

        return ToResult(await submitter.SubmitAsync(Context.User!, prompt!, Context.GetHttpContext()!));
    }

    /// <summary>
    /// Stops a running request of this user, which then ends with PromptFailed and code "cancelled". Returns the
    /// request id, or the code, message and retry time when the id is not a GUID, the user sent too many cancels, or the
    /// cancel was neither stored nor confirmed by the broker.
    /// </summary>
    /// <param name="requestId">Any JSON value, so that one that is not a GUID string gets a rejection with a code.</param>
    public async Task<SubmitResult> CancelPrompt(JsonElement requestId)
    {
        if (RequestIds.Parse(requestId.ValueKind == JsonValueKind.String ? requestId.GetString() : null) is not { } id)
        {
            return new SubmitResult(null, ErrorCodes.InvalidRequest, RequestIds.NotAGuid);
        }

        return ToResult(await canceller.CancelAsync(Context.User!, id, Context.ConnectionAborted));
    }

    private static SubmitResult ToResult(Submission submission) =>
        submission.Error is { } error
            ? new SubmitResult(null, error.Code, error.Message, submission.RetryAfterSeconds)
            : new SubmitResult(submission.RequestId);
}
