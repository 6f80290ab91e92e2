using System.Globalization;
using System.Security.Claims;
using System.Text.RegularExpressions;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Endpoints;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Options;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>What the add-on sends: the prompt and, optionally, a model and an output limit.</summary>
public sealed record PromptInput(string? Prompt, string? Model, int? MaxOutputTokens, bool? Stream = null)
{
    /// <summary>Never used to choose the app; a value that differs from the token's app is rejected with 403.</summary>
    public string? AppId { get; init; }

    /// <summary>Never used to choose the user; a value that differs from the token's user is rejected with 403.</summary>
    public string? UserId { get; init; }

    /// <summary>A preset action on <see cref="Text"/> (see <see cref="PromptPresets.Actions"/>) in place of a free-form prompt.</summary>
    public string? Action { get; init; }

    /// <summary>The selected text a preset action works on.</summary>
    public string? Text { get; init; }

    /// <summary>Target tone of the change_tone action.</summary>
    public string? Tone { get; init; }

    /// <summary>Target language of the translate action.</summary>
    public string? Language { get; init; }

    /// <summary>
    /// Earlier turns of an OpenAI-style conversation, set only by the compatible endpoint. It is never read from the
    /// add-on's JSON, so a browser cannot send system instructions of its own.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<ChatTurn>? Messages { get; init; }

    /// <summary>Checked OpenAI sampling parameters, set only by the compatible endpoint and never read from the add-on's JSON.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public SamplingOptions? Sampling { get; init; }
}

/// <summary>Either the accepted request id, or the status and error to return, with a retry time where one applies.</summary>
public sealed record Submission(Guid? RequestId, int Status, ApiError? Error, int? RetryAfterSeconds = null)
{
    public static Submission Rejected(int status, string code, string message, int? retryAfterSeconds = null) =>
        new(null, status, new ApiError(code, message), retryAfterSeconds);
}

/// <summary>
/// Checks a prompt from an authenticated end user and publishes it, shared by the HTTP API and the hub.
/// App and user come from the verified token only.
/// </summary>
public sealed partial class PromptSubmitter(
    ConfirmedPublisher publisher,
    UserTokens tokens,
    ResultRoute route,
    PromptLimiter limiter,
    TokenReservationStore reservations,
    AcceptedPrompts accepted,
    UserRefCipher userRefs,
    IOptions<PromptOptions> options,
    TimeProvider clock,
    ILogger<PromptSubmitter> logger)
{
    private IReadOnlyDictionary<string, string>? _fieldRules;
    private IReadOnlyDictionary<string, string>? _openAIFieldRules;

    /// <summary>
    /// Range messages by field name for reading a <see cref="PromptInput"/>, so a value of the wrong type gets the
    /// message of the range check in <see cref="SubmitAsync"/>.
    /// </summary>
    public IReadOnlyDictionary<string, string> FieldRules => _fieldRules ??= OutputTokenRules("maxOutputTokens");

    /// <summary>Range messages by field name for reading an OpenAI chat request, as <see cref="FieldRules"/> are for a prompt.</summary>
    public IReadOnlyDictionary<string, string> OpenAIFieldRules => _openAIFieldRules ??= OutputTokenRules("max_tokens", "max_completion_tokens");

    /// <param name="beforePublish">Runs with the new request id before the publish, so a caller waiting for the result cannot miss it.</param>
    public async Task<Submission> SubmitAsync(ClaimsPrincipal user, PromptInput input, HttpContext http, Action<Guid>? beforePublish = null)
    {
        string? appId = user.FindFirstValue(AuthSchemes.AppIdClaim);
        string? pseudonym = tokens.Pseudonym(user);
        if (appId is null || pseudonym is null)
        {
            return Submission.Rejected(StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized, "Send an end-user token.");
        }

        if ((input.AppId is not null && input.AppId != appId)
            || (input.UserId is not null && input.UserId != user.FindFirstValue(AuthSchemes.UserIdClaim))
            || NamesAnotherAppOrUser(http, appId, user.FindFirstValue(AuthSchemes.UserIdClaim)))
        {
            return Submission.Rejected(StatusCodes.Status403Forbidden, ErrorCodes.Forbidden,
                "The app and user come from the token; this request names another app or user.");
        }

        var limits = options.Value;
        if (input.Action is not null && input.Prompt is not null)
        {
            return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "Send either prompt, for a free-form question, or action with text, not both.");
        }

        if (input.Action is null && input.Prompt is null)
        {
            return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "Send prompt with a free-form question, or action with the text it works on.");
        }

        bool freeform = input.Action is null;
        string content = (freeform ? input.Prompt : input.Text) ?? "";
        if (string.IsNullOrWhiteSpace(content))
        {
            return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                freeform ? "prompt is empty: type a question." : "text is empty: select the text the action works on.");
        }

        if (content.Length > limits.MaxPromptCharacters)
        {
            return Submission.Rejected(StatusCodes.Status413PayloadTooLarge, ErrorCodes.PromptTooLong, string.Create(CultureInfo.InvariantCulture,
                $"The {(freeform ? "prompt" : "text")} has {content.Length} characters; the limit is {limits.MaxPromptCharacters}. Shorten it."));
        }

        IReadOnlyList<ChatTurn> turns;
        if (freeform)
        {
            turns = input.Messages is { Count: > 0 } history ? history : [new ChatTurn("user", content)];
        }
        else
        {
            var (presetTurns, problem) = PromptPresets.Build(input.Action!, content, input.Tone, input.Language);
            if (problem is not null)
            {
                return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, problem);
            }

            turns = presetTurns!;
        }

        string model = input.Model ?? limits.DefaultModel;
        if (!IsModelName(model))
        {
            return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, InvalidModelMessage);
        }

        if (input.MaxOutputTokens is < 1 || input.MaxOutputTokens > limits.MaxOutputTokensLimit)
        {
            return Submission.Rejected(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, OutputTokensRange("maxOutputTokens", limits.MaxOutputTokensLimit));
        }

        var now = clock.GetUtcNow();
        var requestId = NewId.NextGuid();
        var timeToLive = TimeSpan.FromSeconds(limits.TimeToLiveSeconds);
        var admission = await limiter.AdmitAsync(user, appId, pseudonym,
            new PromptToAdmit(requestId, model, input.MaxOutputTokens, freeform, TokenEstimate.MaxPromptTokens(turns), (now + timeToLive).UtcDateTime),
            http.RequestAborted);
        if (admission.Rejection is { } rejection)
        {
            return rejection;
        }

        var message = new PromptRequested(
            requestId, requestId, appId, pseudonym, route.RoutingKey, model, admission.MaxOutputTokens,
            turns, now, now + timeToLive, input.Stream ?? true)
        {
            Allowance = admission.Allowance,
            UsageLimited = admission.UsageLimited,
            Sampling = input.Sampling,
            SealedUserRef = admission.Allowance is null ? null : userRefs.Seal(appId, user.FindFirstValue(AuthSchemes.UserIdClaim)!),
        };
        beforePublish?.Invoke(requestId);
        accepted.Add(requestId, appId, pseudonym, message.ExpiresAt);
        bool published;
        try
        {
            published = await publisher.PublishAsync(message, timeToLive);
        }
        catch when (admission.UsageLimited)
        {
            // The reservation must not outlive a request that failed in an unexpected way.
            await ReleaseReservationAsync(admission, requestId);
            throw;
        }

        if (!published)
        {
            accepted.Remove(requestId);

            // NOTE: a publish whose confirm timed out may still reach a worker, which then runs without a reservation.
            // Keeping the reservation instead would block its tokens until the sweep releases them.
            await ReleaseReservationAsync(admission, requestId);
            return Submission.Rejected(StatusCodes.Status503ServiceUnavailable, ErrorCodes.ServiceUnavailable,
                "The message broker did not confirm the prompt. Retry in a few seconds.", ApiErrors.OutageRetryAfterSeconds);
        }

        Log.PromptAccepted(logger, requestId, appId);
        return new Submission(requestId, StatusCodes.Status202Accepted, null);
    }

    /// <summary>Returns the message for an output-token field out of range, also used for a value of the wrong type.</summary>
    public static string OutputTokensRange(string field, int limit) =>
        string.Create(CultureInfo.InvariantCulture, $"{field} must be between 1 and {limit}.");

    private Dictionary<string, string> OutputTokenRules(params string[] fields) =>
        fields.ToDictionary(field => field, field => OutputTokensRange(field, options.Value.MaxOutputTokensLimit), StringComparer.Ordinal);

    private Task ReleaseReservationAsync(Admission admission, Guid requestId) =>
        admission.UsageLimited ? reservations.ReleaseAsync(requestId, CancellationToken.None) : Task.CompletedTask;

    /// <summary>Tells whether the query string or an app header names an app or a user other than the token's.</summary>
    private static bool NamesAnotherAppOrUser(HttpContext http, string appId, string? userId) =>
        (http.Request.Query.TryGetValue("appId", out var fromQuery) && fromQuery.Any(value => value != appId))
        || (http.Request.Headers.TryGetValue("X-App-Id", out var fromHeader) && fromHeader.Any(value => value != appId))
        || (http.Request.Query.TryGetValue("userId", out var userInQuery) && userInQuery.Any(value => value != userId))
        || (http.Request.Query.TryGetValue("user_id", out var snakeUserInQuery) && snakeUserInQuery.Any(value => value != userId));

    /// <summary>The error message for a model name that <see cref="IsModelName"/> rejects.</summary>
    public const string InvalidModelMessage =
        "model must be 1 to 100 letters, digits, '.', '_', ':' or '-', and must not start with 'sk-' as API keys do.";

    /// <summary>
    /// Tells whether a string is a model name that prompts may ask for: 1 to 100 letters, digits, '.', '_', ':' or
    /// '-'. A name that starts like an OpenAI key is rejected, because it is most likely a key pasted into the wrong
    /// field, and a rejected name is never echoed or sent upstream.
    /// </summary>
    public static bool IsModelName(string? name) =>
        name is not null && ModelName().IsMatch(name) && !name.StartsWith("sk-", StringComparison.OrdinalIgnoreCase);

    // \z, not $: in .NET, $ also matches before a final line break.
    [GeneratedRegex(@"^[A-Za-z0-9._:-]{1,100}\z")]
    private static partial Regex ModelName();
}

/// <summary>Parses the request id that a client names to cancel a prompt or to fetch its result.</summary>
public static class RequestIds
{
    public const string NotAGuid =
        "requestId must be a GUID, such as 3f2504e0-4f89-11d3-9a0c-0305e82c3301: send the requestId that submitting the prompt returned.";

    /// <summary>Returns the id, or null when the text is not a GUID.</summary>
    public static Guid? Parse(string? text) => Guid.TryParse(text, out var id) ? id : null;
}

/// <summary>
/// The routing key that brings results back to this Ingress instance, and the name of the queue bound with it.
/// The queue is deleted with the instance; results for its users are then dropped by the broker.
/// </summary>
public sealed class ResultRoute(string instanceId)
{
    public string RoutingKey { get; } = instanceId;

    public string QueueName => "ingress-results-" + RoutingKey;
}
