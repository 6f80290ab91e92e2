using System.Globalization;
using System.Security.Claims;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Hubs;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Ingress.Webhooks;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

public sealed record AppInput(string? Name);

public sealed record UserTokenInput(
    string? UserId,
    int? TtlSeconds,
    int? RequestsPerMinute,
    long? MonthlyTokenAllowance,
    int? AllowanceThresholdPercent = null,
    bool? AddonDisabled = null,
    bool? FreeformDisabled = null);

public sealed record SecretRotationInput(int? GraceSeconds);

/// <summary>The operator's, the host backend's and the add-on's endpoints.</summary>
public static class ApiEndpoints
{
    private const int MaxGraceSeconds = 30 * 86_400;

    /// <summary>Range-check message of <c>graceSeconds</c>, which JsonBody also returns for a value of the wrong type.</summary>
    private static readonly Dictionary<string, string> SecretRotationRules = new()
    {
        ["graceSeconds"] = string.Create(CultureInfo.InvariantCulture,
            $"graceSeconds must be a whole number of seconds between 0 and {MaxGraceSeconds} (30 days)."),
    };

    public static IEndpointRouteBuilder MapApiEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var admin = endpoints.MapGroup("/api/admin/apps").RequireAuthorization(AuthSchemes.Admin);
        admin.MapPost("", CreateAppAsync);
        admin.MapGet("", ListAppsAsync);
        admin.MapGet("/{appId}", GetAppAsync);
        admin.MapDelete("/{appId}", DeleteAppAsync);
        admin.MapPut("/{appId}/limits", SetLimitsAsync);
        admin.MapPost("/{appId}/secrets", RotateSecretAsync);
        admin.MapDelete("/{appId}/secrets/previous", RevokePreviousSecretsAsync);

        endpoints.MapPost("/api/apps/{appId}/user-tokens", IssueUserToken).RequireAuthorization(AuthSchemes.AppCredentials);
        endpoints.MapGet("/api/apps/{appId}/usage", GetUsageAsync).RequireAuthorization(AuthSchemes.AppCredentials);
        endpoints.MapGet("/api/apps/{appId}/limits", GetDeveloperLimitsAsync).RequireAuthorization(AuthSchemes.AppCredentials);
        endpoints.MapPut("/api/apps/{appId}/limits", SetDeveloperLimitsAsync).RequireAuthorization(AuthSchemes.AppCredentials);

        var prompts = endpoints.MapGroup("/api/prompts").RequireAuthorization(AuthSchemes.UserToken).RequireCors(BrowserOrigins.PolicyName);
        prompts.MapPost("", SubmitPromptAsync);
        // No route constraint on the id, so that one that is not a GUID gets 400 with the fix in place of a 404.
        prompts.MapGet("/{requestId}", GetPromptResultAsync);
        prompts.MapPost("/{requestId}/cancel", CancelPromptAsync);
        return endpoints;
    }

    private static async Task<IResult> CreateAppAsync(HttpContext http, AppStore apps, ILogger<ApiLogCategory> logger)
    {
        var (input, error) = await JsonBody.ReadAsync<AppInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        string name = input!.Name?.Trim() ?? "";
        if (name.Length is 0 or > 100 || name.Any(char.IsControl))
        {
            return ApiErrors.BadRequest("name must be 1 to 100 characters without control characters.");
        }

        var (appId, secret) = await apps.CreateAsync(name, http.RequestAborted);
        Log.AppCreated(logger, appId);
        return Results.Created($"/api/admin/apps/{appId}", new { appId, appSecret = secret });
    }

    /// <summary>Lists apps in id order, a page at a time; <c>after</c> is the last app id of the previous page.</summary>
    /// <param name="limit">Read as text, because a value that is not a number would otherwise get an empty 400 that does not name it.</param>
    private static async Task<IResult> ListAppsAsync(string? after, string? limit, HttpContext http, AppStore apps)
    {
        int pageSize = 100;
        if (limit is not null && (!int.TryParse(limit, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture,
            out pageSize) || pageSize is < 1 or > 1000))
        {
            return ApiErrors.BadRequest("limit must be a whole number between 1 and 1000.");
        }

        var page = await apps.ListAsync(after, pageSize, http.RequestAborted);
        return Results.Ok(new { apps = page.Select(Summary), next = page.Count == pageSize ? page[^1].AppId : null });
    }

    private static async Task<IResult> GetAppAsync(string appId, HttpContext http, AppStore apps)
    {
        var app = await apps.FindAsync(appId, http.RequestAborted);
        return app is null
            ? AppNotFound(appId)
            : Results.Ok(new
            {
                app.AppId, app.Name, app.AddonActive, app.Limits, app.DeveloperLimits, app.EffectiveLimits,
                webhookConfigured = app.WebhookUrl is not null, app.CreatedAt,
            });
    }

    /// <summary>
    /// Removes an app and everything stored for it: its key, usage and rate counters, stored results, user controls and
    /// pending webhook deliveries. The app document goes last, so a removal that fails halfway can be sent again and
    /// finishes the rest.
    /// </summary>
    private static async Task<IResult> DeleteAppAsync(string appId, HttpContext http, AppStore apps, KeyStore keys, UsageStore usage,
        TokenReservationStore reservations, PromptResultStore results, RateCounterStore rates, UserControlStore userControls,
        WebhookOutbox webhooks, ILogger<ApiLogCategory> logger)
    {
        var cancellationToken = http.RequestAborted;
        if (await apps.FindAsync(appId, cancellationToken) is null)
        {
            return AppNotFound(appId);
        }

        // The app record goes last, so a removal that stopped halfway can be repeated. Usage and results are deleted
        // once more after it: a worker that stores them checks afterwards that the app still exists, so a document
        // written during the removal is deleted either here or by that worker.
        await keys.DeleteAsync(appId, cancellationToken);
        await usage.DeleteAppAsync(appId, cancellationToken);
        await reservations.DeleteAppAsync(appId, cancellationToken);
        await results.DeleteAppAsync(appId, cancellationToken);
        await rates.DeleteAppAsync(appId, cancellationToken);
        await userControls.DeleteAppAsync(appId, cancellationToken);
        await webhooks.DeleteAppAsync(appId, cancellationToken);
        await apps.DeleteAsync(appId, cancellationToken);
        await usage.DeleteAppAsync(appId, cancellationToken);
        await results.DeleteAppAsync(appId, cancellationToken);
        Log.AppRemoved(logger, appId);
        return Results.NoContent();
    }

    private static object Summary(AppDocument app) => new { app.AppId, app.Name, app.AddonActive, app.CreatedAt };

    private static Task<IResult> SetLimitsAsync(string appId, HttpContext http, AppStore apps) =>
        StoreLimitsAsync(appId, http, apps, developer: false);

    /// <summary>Returns the limits the developer set, the operator's, and the stricter of both, which apply.</summary>
    private static async Task<IResult> GetDeveloperLimitsAsync(string appId, HttpContext http, AppStore apps)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        return await apps.FindAsync(appId, http.RequestAborted) is { } app
            ? Results.Ok(new { appId, limits = app.DeveloperLimits ?? new AppLimits(), operatorLimits = app.Limits, effective = app.EffectiveLimits })
            : AppNotFound(appId);
    }

    /// <summary>
    /// Stores the developer's own limits. They can only tighten the operator's: for each limit the lower of the two
    /// applies, and only models that both allow.
    /// </summary>
    private static async Task<IResult> SetDeveloperLimitsAsync(string appId, HttpContext http, AppStore apps)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        return await StoreLimitsAsync(appId, http, apps, developer: true);
    }

    private static async Task<IResult> StoreLimitsAsync(string appId, HttpContext http, AppStore apps, bool developer)
    {
        var (limits, error) = await JsonBody.ReadAsync<AppLimits>(http.Request, AppLimits.FieldRules);
        if (error is not null)
        {
            return error;
        }

        if (limits!.Problem() is { } problem)
        {
            return ApiErrors.BadRequest(problem);
        }

        if (!await apps.SetLimitsAsync(appId, limits, http.RequestAborted, developer))
        {
            return AppNotFound(appId);
        }

        if (!developer)
        {
            return Results.Ok(limits);
        }

        var app = await apps.FindAsync(appId, http.RequestAborted);
        return Results.Ok(new { appId, limits, operatorLimits = app?.Limits, effective = app?.EffectiveLimits });
    }

    private static async Task<IResult> RotateSecretAsync(string appId, HttpContext http, AppStore apps, RevokedConnectionSweeper sweeper)
    {
        // A request without a body gets the default grace period, also when its client sets a Content-Type anyway.
        bool noBody = http.Request.ContentLength == 0 || http.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody == false;
        var (input, error) = noBody || (http.Request.ContentLength is null && http.Request.ContentType is null)
            ? (new SecretRotationInput(null), null)
            : await JsonBody.ReadAsync<SecretRotationInput>(http.Request, SecretRotationRules);
        if (error is not null)
        {
            return error;
        }

        int grace = input!.GraceSeconds ?? 3600;
        if (grace is < 0 or > MaxGraceSeconds)
        {
            return ApiErrors.BadRequest(SecretRotationRules["graceSeconds"]);
        }

        var (result, secret) = await apps.RotateSecretAsync(appId, TimeSpan.FromSeconds(grace), http.RequestAborted);
        if (result != SecretChange.Done)
        {
            return SecretChangeError(appId, result);
        }

        await sweeper.SweepAsync(appId, http.RequestAborted);
        return Results.Ok(new { appId, appSecret = secret, previousSecretsExpireInSeconds = grace });
    }

    private static async Task<IResult> RevokePreviousSecretsAsync(string appId, HttpContext http, AppStore apps, RevokedConnectionSweeper sweeper)
    {
        var result = await apps.RevokePreviousSecretsAsync(appId, http.RequestAborted);
        if (result != SecretChange.Done)
        {
            return SecretChangeError(appId, result);
        }

        await sweeper.SweepAsync(appId, http.RequestAborted);
        return Results.NoContent();
    }

    private static IResult AppNotFound(string appId) =>
        ApiErrors.Result(StatusCodes.Status404NotFound, ErrorCodes.NotFound, $"No app has the id '{appId}'.");

    private static IResult SecretChangeError(string appId, SecretChange result) => result switch
    {
        SecretChange.AppNotFound => AppNotFound(appId),
        SecretChange.NoPreviousSecret => ApiErrors.Result(StatusCodes.Status409Conflict, ErrorCodes.Conflict,
            $"App '{appId}' has no previous secret to revoke, so its current secret still works. To replace the current secret, "
            + $"rotate it: POST /api/admin/apps/{appId}/secrets with graceSeconds 0 makes the old secret stop working at once."),
        _ => ApiErrors.Result(StatusCodes.Status409Conflict, ErrorCodes.Conflict,
            $"The secrets of app '{appId}' were changed by other requests at the same time, so this change was not made. Send the request again."),
    };

    /// <summary>
    /// Returns what is wrong with a host user id, or null. "." and ".." are rejected, because a URL path cannot name
    /// them: servers remove such dot segments before routing, so that user's data could not be read or erased.
    /// </summary>
    public static string? UserIdProblem(string userId) =>
        userId.Length is 0 or > 128 || userId is "." or ".." || userId.Any(char.IsControl) || userId != userId.Trim() || userId.StartsWith('@')
            ? "userId must be 1 to 128 characters, not '.' or '..', without control characters, surrounding spaces or a leading '@'."
            : null;

    /// <summary>
    /// Returns the range-check messages of the numbers in a user token request, which JsonBody also returns for a value
    /// of the wrong type. The upper end of requestsPerMinute is the maximum of its .NET type.
    /// </summary>
    private static Dictionary<string, string> UserTokenRules(int maxTokenLifetimeSeconds) => new(AddonEndpoints.UserControlRules)
    {
        ["ttlSeconds"] = string.Create(CultureInfo.InvariantCulture,
            $"ttlSeconds must be a whole number of seconds between 30 and {maxTokenLifetimeSeconds}."),
        ["requestsPerMinute"] = string.Create(CultureInfo.InvariantCulture, $"requestsPerMinute must be a whole number from 1 to {int.MaxValue}."),
    };

    private static async Task<IResult> IssueUserToken(string appId, HttpContext http, UserTokens tokens, IOptions<AuthOptions> options)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var auth = options.Value;
        var rules = UserTokenRules(auth.MaxTokenLifetimeSeconds);
        var (input, error) = await JsonBody.ReadAsync<UserTokenInput>(http.Request, rules);
        if (error is not null)
        {
            return error;
        }

        string userId = input!.UserId ?? "";
        if (UserIdProblem(userId) is { } problem)
        {
            return ApiErrors.BadRequest(problem);
        }

        int seconds = input.TtlSeconds ?? auth.DefaultTokenLifetimeSeconds;
        if (seconds < 30 || seconds > auth.MaxTokenLifetimeSeconds)
        {
            return ApiErrors.BadRequest(rules["ttlSeconds"]);
        }

        if (input.RequestsPerMinute < 1)
        {
            return ApiErrors.BadRequest(rules["requestsPerMinute"]);
        }

        if (input.MonthlyTokenAllowance < 0)
        {
            return ApiErrors.BadRequest(rules["monthlyTokenAllowance"]);
        }

        if (input.AllowanceThresholdPercent is < 1 or > 100)
        {
            return ApiErrors.BadRequest(rules["allowanceThresholdPercent"]);
        }

        var (token, expiresAt) = tokens.Issue(appId, userId, http.User.FindFirstValue(AuthSchemes.SecretIdClaim)!, TimeSpan.FromSeconds(seconds),
            input.RequestsPerMinute, input.MonthlyTokenAllowance,
            new UserTokenControls(input.AddonDisabled, input.FreeformDisabled, input.AllowanceThresholdPercent));
        return Results.Ok(new { token, expiresAt });
    }

    private static async Task<IResult> GetUsageAsync(string appId, HttpContext http, UsageStore usage, AppStore apps, TimeProvider clock)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var now = clock.GetUtcNow().UtcDateTime;
        var (day, month) = await usage.GetAppUsageAsync(appId, now, http.RequestAborted);
        var app = await apps.FindCachedAsync(appId, http.RequestAborted);
        return Results.Ok(new
        {
            appId,
            today = new { period = UsageStore.Day(now), tokens = day?.Tokens ?? 0, requests = day?.Requests ?? 0 },
            month = new { period = UsageStore.Month(now), tokens = month?.Tokens ?? 0, requests = month?.Requests ?? 0 },
            limits = app?.EffectiveLimits,
        });
    }

    private static async Task<IResult> SubmitPromptAsync(HttpContext http, PromptSubmitter submitter)
    {
        var (input, error) = await JsonBody.ReadAsync<PromptInput>(http.Request, submitter.FieldRules);
        if (error is not null)
        {
            return error;
        }

        var submission = await submitter.SubmitAsync(http.User, input!, http);
        return submission.Error is null ? Results.Accepted(value: new { requestId = submission.RequestId }) : Rejected(http, submission);
    }

    /// <summary>Returns the stored result of one of this user's requests, for a client that missed the push.</summary>
    private static async Task<IResult> GetPromptResultAsync(
        string requestId, HttpContext http, PromptResultStore results, UserTokens tokens, AcceptedPrompts accepted)
    {
        if (RequestIds.Parse(requestId) is not { } id)
        {
            return ApiErrors.BadRequest(RequestIds.NotAGuid);
        }

        string? appId = http.User.FindFirstValue(AuthSchemes.AppIdClaim);
        string? pseudonym = tokens.Pseudonym(http.User);
        var stored = await results.FindAsync(id, http.RequestAborted);
        if (stored is not null && (stored.AppId != appId || stored.UserId != pseudonym))
        {
            // A record of another app or user is not the caller's. It can be that user's cancel of this id, which a worker replaces.
            stored = null;
        }

        if (stored is null && accepted.IsWaiting(id, appId, pseudonym))
        {
            // Still in the queue: no worker has taken it, so no record exists yet.
            return Results.Ok(new
            {
                requestId = id,
                status = PromptStatus.Pending,
                text = (string?)null,
                finishReason = (string?)null,
                usage = (object?)null,
                code = (string?)null,
                message = (string?)null,
                retryAfterSeconds = (int?)null,
            });
        }

        if (stored is null)
        {
            return ApiErrors.Result(StatusCodes.Status404NotFound, ErrorCodes.NotFound,
                "No result is stored for this request id: it is unknown, belongs to someone else, or has expired.");
        }

        return Results.Ok(new
        {
            requestId = id,
            status = stored.Status,
            text = stored.Text,
            finishReason = stored.FinishReason,
            usage = stored.Usage is { } u ? new { u.PromptTokens, u.CompletionTokens, u.TotalTokens } : null,
            code = stored.Code,
            message = stored.Message,
            retryAfterSeconds = stored.RetryAfterSeconds,
        });
    }

    private static async Task<IResult> CancelPromptAsync(string requestId, HttpContext http, PromptCanceller canceller)
    {
        if (RequestIds.Parse(requestId) is not { } id)
        {
            return ApiErrors.BadRequest(RequestIds.NotAGuid);
        }

        var cancel = await canceller.CancelAsync(http.User, id, http.RequestAborted);
        return cancel.Error is null ? Results.Accepted() : Rejected(http, cancel);
    }

    /// <summary>Turns a rejected submission into its error response, with Retry-After where one applies.</summary>
    public static IResult Rejected(HttpContext http, Submission submission)
    {
        if (submission.RetryAfterSeconds is { } seconds)
        {
            http.Response.Headers.RetryAfter = seconds.ToString(CultureInfo.InvariantCulture);
        }

        return ApiErrors.Result(submission.Status, submission.Error!.Code, submission.Error.Message);
    }
}
