using System.Globalization;
using System.Text.RegularExpressions;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Ingress.Webhooks;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

public sealed record ActivationInput(bool? Active);

/// <summary>Body of <c>PUT /api/apps/{appId}/webhook</c>: the URL, or null to remove the webhook, and whether to request a new signing secret.</summary>
public sealed record WebhookInput(string? Url, bool? RotateSecret);

public sealed record UserControlsInput(bool? AddonDisabled, bool? FreeformDisabled, long? MonthlyTokenAllowance, int? AllowanceThresholdPercent);

/// <summary>Switching the add-on on and off, the host's per-user controls and webhook, and the user's own allowance.</summary>
public static partial class AddonEndpoints
{
    /// <summary>
    /// The range-check messages of the per-user controls by JSON field name, which JsonBody also returns for a value of
    /// the wrong type. The endpoints that issue user tokens take the same fields with the same rules. The upper end of
    /// monthlyTokenAllowance is the maximum of its .NET type.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> UserControlRules = new Dictionary<string, string>
    {
        ["monthlyTokenAllowance"] = string.Create(CultureInfo.InvariantCulture,
            $"monthlyTokenAllowance must be a whole number of tokens from 0 to {long.MaxValue}."),
        ["allowanceThresholdPercent"] = "allowanceThresholdPercent must be a whole number from 1 to 100.",
    };

    public static IEndpointRouteBuilder MapAddonEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var app = endpoints.MapGroup("/api/apps/{appId}").RequireAuthorization(AuthSchemes.AppCredentials);
        app.MapGet("/addon", GetActivationAsync);
        app.MapPut("/addon", SetActivationAsync);
        app.MapPut("/webhook", SetWebhookAsync);
        app.MapPut("/users/{userId}/controls", SetUserControlsAsync);
        app.MapGet("/users/{userId}", GetUserDataAsync);
        app.MapDelete("/users/{userId}", EraseUserAsync);
        endpoints.MapGet("/api/me/usage", GetOwnUsageAsync).RequireAuthorization(AuthSchemes.UserToken).RequireCors(BrowserOrigins.PolicyName);
        return endpoints;
    }

    private static async Task<IResult> GetActivationAsync(string appId, HttpContext http, AppStore apps)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var app = await apps.FindAsync(appId, http.RequestAborted);
        return Results.Ok(new { appId, active = app?.AddonActive == true, webhookUrl = app?.WebhookUrl });
    }

    /// <summary>Switches the add-on on (only with an active key) or off; off takes effect for the very next prompt.</summary>
    private static async Task<IResult> SetActivationAsync(string appId, HttpContext http, AppStore apps, KeyStore keys)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var (input, error) = await JsonBody.ReadAsync<ActivationInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        if (input!.Active is not { } active)
        {
            return ApiErrors.BadRequest("active is missing: send true to switch the add-on on, false to switch it off.");
        }

        if (active)
        {
            // An unverified key serves prompts too, and so does the previous key while a replacement is pending or
            // after the provider rejected the replacement, unless the provider rejected the previous key as well.
            var key = await keys.FindAsync(appId, http.RequestAborted);
            if (key is null || !key.HasUsableKey())
            {
                return ApiErrors.Result(StatusCodes.Status409Conflict, ErrorCodes.KeyNotActive,
                    "The add-on can be switched on only while the app has a usable OpenAI key (active or unverified). Register a key and wait until it is checked.");
            }
        }

        await apps.SetActivationAsync(appId, active, http.RequestAborted);
        return Results.Ok(new { appId, active });
    }

    private static async Task<IResult> SetWebhookAsync(string appId, HttpContext http, AppStore apps, IOptions<WebhookOptions> webhooks)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var (input, error) = await JsonBody.ReadAsync<WebhookInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        if (input!.Url is { } url && await WebhookAddresses.CheckAsync(url, webhooks.Value.AllowPrivateAddresses, http.RequestAborted) is { } problem)
        {
            return ApiErrors.BadRequest(problem);
        }

        string? secret = await apps.SetWebhookAsync(appId, input.Url, input.RotateSecret == true, http.RequestAborted);
        return Results.Ok(new { appId, url = input.Url, signingSecret = secret });
    }

    /// <summary>Returns the message of the first control that is out of range, or null when both are in range or left out.</summary>
    public static string? UserControlProblem(long? monthlyTokenAllowance, int? allowanceThresholdPercent) =>
        monthlyTokenAllowance < 0 ? UserControlRules["monthlyTokenAllowance"]
        : allowanceThresholdPercent is < 1 or > 100 ? UserControlRules["allowanceThresholdPercent"]
        : null;

    /// <summary>
    /// Stores the host's controls for one end user. They apply to the user's next prompt whatever token the user
    /// presents, at once on this instance and within 5 seconds on the others.
    /// </summary>
    private static async Task<IResult> SetUserControlsAsync(string appId, string userId, HttpContext http, AppStore apps, UserControlStore store,
        UserTokens tokens, TimeProvider clock)
    {
        if (CheckUser(http, appId, ref userId) is { } rejected)
        {
            return rejected;
        }

        var (input, error) = await JsonBody.ReadAsync<UserControlsInput>(http.Request, UserControlRules);
        if (error is not null)
        {
            return error;
        }

        if (UserControlProblem(input!.MonthlyTokenAllowance, input.AllowanceThresholdPercent) is { } problem)
        {
            return ApiErrors.BadRequest(problem);
        }

        var controls = new UserControls
        {
            Id = UserControlStore.IdOf(appId, tokens.Pseudonym(appId, userId)),
            AddonDisabled = input.AddonDisabled,
            FreeformDisabled = input.FreeformDisabled,
            MonthlyTokenAllowance = input.MonthlyTokenAllowance,
            AllowanceThresholdPercent = input.AllowanceThresholdPercent,
            UpdatedAt = clock.GetUtcNow().UtcDateTime,
        };
        await apps.MarkUserControlsAsync(appId, http.RequestAborted);
        await store.SaveAsync(controls, http.RequestAborted);
        return Results.Ok(new { appId, userId, input.AddonDisabled, input.FreeformDisabled, input.MonthlyTokenAllowance, input.AllowanceThresholdPercent });
    }

    /// <summary>
    /// Returns everything stored about one end user of the app, so the host can reply to the user's request for access:
    /// the host's controls, the monthly usage counters, the stored prompt results, the per-minute rate counters, the
    /// tokens reserved for the user's running prompts and the webhook deliveries about the user that still wait for an attempt.
    /// </summary>
    private static Task<IResult> GetUserDataAsync(string appId, string userId, HttpContext http, [AsParameters] UserDataStores stores) =>
        ForUserAsync(http, appId, userId, stores, async (userId, pseudonym, cancellationToken) =>
        {
            var controls = await stores.Controls.FindAsync(appId, pseudonym, cancellationToken);
            var months = await stores.Usage.GetUserMonthsAsync(appId, pseudonym, cancellationToken);
            var promptResults = await stores.Results.FindUserAsync(appId, pseudonym, cancellationToken);
            var rateCounters = await stores.Rates.GetUserAsync(appId, pseudonym, cancellationToken);
            var reservations = await stores.Reservations.FindUserAsync(appId, pseudonym, cancellationToken);
            var webhookDeliveries = await stores.Webhooks.FindUserAsync(appId, pseudonym, cancellationToken);
            return Results.Ok(new
            {
                appId,
                userId,
                controls = controls is null ? null : new
                {
                    controls.AddonDisabled, controls.FreeformDisabled, controls.MonthlyTokenAllowance, controls.AllowanceThresholdPercent,
                    controls.UpdatedAt,
                },
                usage = months.Select(m => new { month = m.Period, tokens = m.Tokens, requests = m.Requests, deleteAfter = m.ExpiresAt }),
                results = promptResults.Select(r => new
                {
                    requestId = r.RequestId, status = r.Status, text = r.Text, finishReason = r.FinishReason, code = r.Code, createdAt = r.CreatedAt,
                    deleteAfter = r.ExpiresAt,
                }),
                rateCounters = rateCounters.Select(c => new { minute = c.Period, requests = c.Requests, deleteAfter = c.ExpiresAt }),
                tokenReservations = reservations.Select(r => new { requestId = r.RequestId, tokens = r.Tokens, deleteAfter = r.ExpiresAt }),
                webhookDeliveries = webhookDeliveries.Select(d => new
                {
                    eventId = d.Id, attempts = d.Attempts, nextAttemptAt = d.NextAttemptAt, deleteAfter = d.ExpiresAt,
                }),
            });
        });

    /// <summary>
    /// Deletes everything stored about one end user of the app: controls, monthly counters, stored prompt results,
    /// per-minute rate counters, the tokens reserved for running prompts and the webhook deliveries that name the user.
    /// The app's own day and month totals keep the user's tokens, because they name no user.
    /// </summary>
    private static Task<IResult> EraseUserAsync(string appId, string userId, HttpContext http, [AsParameters] UserDataStores stores,
        ILogger<ApiLogCategory> logger) =>
        ForUserAsync(http, appId, userId, stores, async (userId, pseudonym, cancellationToken) =>
        {
            bool controls = await stores.Controls.DeleteAsync(appId, pseudonym, cancellationToken);

            // Before the counters are deleted, so that the app's counters release what the user's running prompts reserved.
            long tokenReservations = await stores.Reservations.ReleaseUserAsync(appId, pseudonym, cancellationToken);
            long counters = await stores.Usage.DeleteUserAsync(appId, pseudonym, cancellationToken);
            long promptResults = await stores.Results.DeleteUserAsync(appId, pseudonym, cancellationToken);
            long rateCounters = await stores.Rates.DeleteUserAsync(appId, pseudonym, cancellationToken);
            long webhookDeliveries = await stores.Webhooks.DeleteUserAsync(appId, pseudonym, cancellationToken);
            Log.UserErased(logger, appId, counters, promptResults);
            return Results.Ok(new
            {
                appId, userId,
                deleted = new { controls, usageCounters = counters, results = promptResults, rateCounters, tokenReservations, webhookDeliveries },
            });
        });

    /// <summary>Checks the caller and the user id in the path, then runs the action with the decoded user id and its pseudonym.</summary>
    private static async Task<IResult> ForUserAsync(HttpContext http, string appId, string userId, UserDataStores stores,
        Func<string, string, CancellationToken, Task<IResult>> action)
    {
        return CheckUser(http, appId, ref userId) ?? await action(userId, stores.Tokens.Pseudonym(appId, userId), http.RequestAborted);
    }

    /// <summary>
    /// Checks the caller and the user id of the path, and returns the error to send, or null. Routing leaves "%2F"
    /// encoded in a route value, so the route value is ambiguous for an id that contains "/" or "%2F". The id is
    /// therefore decoded once from the raw request target, and a raw path that does not have the shape of the
    /// matched route is rejected, because which of its segments is the user id is then uncertain.
    /// </summary>
    private static IResult? CheckUser(HttpContext http, string appId, ref string userId)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        if (UserIdFromRawPath(http, appId, userId) is not { } decoded)
        {
            string route = (http.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "/api/apps/{appId}/users/{userId}";
            return ApiErrors.BadRequest(
                $"The path must have the form {route} without '.' or '..' segments. Percent-encode the user id once, "
                + "with '/' as %2F and '%' as %25, and send the app id and the other segments unencoded.");
        }

        userId = decoded;
        return ApiEndpoints.UserIdProblem(userId) is { } problem ? ApiErrors.BadRequest(problem) : null;
    }

    /// <summary>
    /// Returns the user id segment of the raw request target, decoded once, or null when the raw path does not match
    /// the matched route segment by segment. A '.' or '..' segment or a segment too many or too few is a mismatch. So
    /// is a literal or app id that decodes to another value, or a user segment that Kestrel decoded differently.
    /// </summary>
    private static string? UserIdFromRawPath(HttpContext http, string appId, string routedUserId)
    {
        string? rawTarget = http.Features.Get<IHttpRequestFeature>()?.RawTarget;

        // An absolute-form target (http://host/path), which clients send only to proxies, is rejected rather than parsed.
        if (http.GetEndpoint() is not RouteEndpoint endpoint || rawTarget is null || !rawTarget.StartsWith('/'))
        {
            return null;
        }

        string[] segments = rawTarget.Split('?', 2)[0][1..].Split('/');

        // Routing also matches the path with one trailing slash.
        if (segments.Length > 1 && segments[^1].Length == 0)
        {
            segments = segments[..^1];
        }

        var pattern = endpoint.RoutePattern.PathSegments;
        if (segments.Length != pattern.Count)
        {
            return null;
        }

        string? userId = null;
        for (int index = 0; index < segments.Length; index++)
        {
            string decoded = Uri.UnescapeDataString(segments[index]);
            if (decoded is "." or "..")
            {
                return null;
            }

            switch (pattern[index].Parts)
            {
                case [RoutePatternLiteralPart literal] when string.Equals(decoded, literal.Content, StringComparison.OrdinalIgnoreCase):
                    break;
                case [RoutePatternParameterPart { Name: "appId" }] when string.Equals(decoded, appId, StringComparison.Ordinal):
                    break;
                case [RoutePatternParameterPart { Name: "userId" }] when DecodedExceptSlashes(segments[index]) == routedUserId:
                    userId = decoded;
                    break;
                default:
                    return null;
            }
        }

        return userId;
    }

    /// <summary>Decodes a raw path segment as Kestrel does for <see cref="HttpRequest.Path"/>: once, with "%2F" left encoded.</summary>
    private static string DecodedExceptSlashes(string rawSegment) =>
        Uri.UnescapeDataString(EncodedSlash().Replace(rawSegment, "%25$1"));

    [GeneratedRegex("%(2[Ff])")]
    private static partial Regex EncodedSlash();

    /// <summary>Token service that derives user pseudonyms, and the stores that contain data of one end user.</summary>
    private readonly record struct UserDataStores(
        UserTokens Tokens, UserControlStore Controls, UsageStore Usage, PromptResultStore Results, RateCounterStore Rates, TokenReservationStore Reservations,
        WebhookOutbox Webhooks);

    /// <summary>Returns the end user's tokens this month and, when the host set an allowance, what is left of it.</summary>
    private static async Task<IResult> GetOwnUsageAsync(HttpContext http, UserTokens tokens, UsageStore usage, AppStore apps, UserControlStore store,
        TimeProvider clock)
    {
        string appId = http.User.FindFirst(AuthSchemes.AppIdClaim)!.Value;
        string pseudonym = tokens.Pseudonym(http.User)!;
        var now = clock.GetUtcNow().UtcDateTime;
        long used = (await usage.GetUserMonthAsync(appId, pseudonym, now, http.RequestAborted))?.Tokens ?? 0;

        // The add-on calls this after every answer, so an app without controls skips their read as prompts do. Token
        // validation has just cached the app, so this costs no database read.
        var app = await apps.FindCachedAsync(appId, http.RequestAborted);
        var controls = app is { MayHaveUserControls: false } ? null : await store.FindAsync(appId, pseudonym, http.RequestAborted);
        var allowance = PromptLimiter.AllowanceOf(http.User, controls);
        return Results.Ok(new
        {
            period = UsageStore.Month(now),
            usedTokens = used,
            monthlyTokenAllowance = allowance?.MonthlyTokens,
            remainingTokens = allowance is null ? (long?)null : Math.Max(0, allowance.MonthlyTokens - used),
            thresholdPercent = allowance?.ThresholdPercent,
            resetsAt = new DateTime(now.Year, now.Month, 1, 0, 0, 0, DateTimeKind.Utc).AddMonths(1).ToString("O", CultureInfo.InvariantCulture),
        });
    }
}
