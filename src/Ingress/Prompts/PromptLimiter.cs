using System.Globalization;
using System.Security.Claims;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>The output limit and allowance to send upstream, or why the prompt may not go upstream at all.</summary>
/// <param name="UsageLimited">
/// Whether a token quota or an allowance applies. Tokens are then reserved for the prompt, and the caller must release
/// them if it does not publish the prompt.
/// </param>
public sealed record Admission(int MaxOutputTokens, Submission? Rejection, UserAllowance? Allowance = null, bool UsageLimited = false);

/// <summary>The prompt to admit: its request id, the most tokens its messages can count as, and how long it may wait in the queue.</summary>
public sealed record PromptToAdmit(Guid RequestId, string Model, int? RequestedOutputTokens, bool Freeform, long MaxPromptTokens, DateTime ExpiresAt);

/// <summary>
/// Applies the app's and the end user's limits before anything is published: allowed models, output tokens,
/// requests per minute (counters shared by every Ingress instance) and token quotas (counted from the upstream's
/// reported usage, with the maximum cost of running prompts reserved against them).
/// </summary>
public sealed class PromptLimiter(
    AppStore apps, UserControlStore userControls, RateCounterStore rates, UsageStore usage, TokenReservationStore reservations,
    IOptions<PromptOptions> options, TimeProvider clock)
{
    /// <summary>
    /// How long after a prompt's queue expiry its reserved tokens are released if no worker finished it, for example
    /// after a crash. It covers the upstream call and its retries, which may start just before the expiry.
    /// </summary>
    public static readonly TimeSpan ReservationGrace = TimeSpan.FromMinutes(15);

    /// <summary>Seconds after which a prompt rejected because running prompts reserved the rest of a quota should be sent again.</summary>
    public const int ReservedRetryAfterSeconds = 5;

    /// <summary>Share of the allowance, in percent, at which the host is told when it chose none.</summary>
    public const int DefaultThresholdPercent = 80;

    public const string AppRemovedMessage = "The app of this token no longer exists.";

    public const string SecretRevokedMessage = "The app secret that issued this token was revoked. Fetch a new token from the host application.";

    public async Task<Admission> AdmitAsync(ClaimsPrincipal user, string appId, string pseudonym, PromptToAdmit prompt, CancellationToken cancellationToken)
    {
        var (model, requestedOutputTokens, freeform) = (prompt.Model, prompt.RequestedOutputTokens, prompt.Freeform);
        var app = await apps.FindCachedAsync(appId, cancellationToken);
        if (app is null)
        {
            return Reject(StatusCodes.Status403Forbidden, ErrorCodes.Forbidden, AppRemovedMessage);
        }

        // A hub connection proves its token only when it opens, so this check catches a secret revoked since then.
        var now = clock.GetUtcNow().UtcDateTime;
        if (!app.HasActiveSecret(user, now))
        {
            return Reject(StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized, SecretRevokedMessage);
        }

        if (!app.AddonActive)
        {
            return Reject(StatusCodes.Status403Forbidden, ErrorCodes.AddonInactive,
                "The add-on is switched off for this app. The developer can switch it on in the console.");
        }

        // With many users the per-user cache misses on most prompts, so an app that never had controls skips the database read.
        var controls = app.MayHaveUserControls ? await userControls.FindCachedAsync(appId, pseudonym, cancellationToken) : null;
        if (controls?.AddonDisabled == true || ClaimBool(user, UserTokens.AddonDisabledClaim))
        {
            return Reject(StatusCodes.Status403Forbidden, ErrorCodes.AddonDisabledForUser, "The add-on is switched off for your account.");
        }

        if (freeform && (controls?.FreeformDisabled == true || ClaimBool(user, UserTokens.FreeformDisabledClaim)))
        {
            return Reject(StatusCodes.Status403Forbidden, ErrorCodes.FreeformDisabled,
                "Free-form prompts are switched off for your account; use one of the actions on selected text.");
        }

        var limits = app.EffectiveLimits;
        if (limits.AllowedModels is { } allowed && !allowed.Contains(model, StringComparer.Ordinal))
        {
            return Reject(StatusCodes.Status400BadRequest, ErrorCodes.ModelNotAllowed, allowed.Count == 0
                ? "No model is enabled for this app: the operator's and the developer's lists of allowed models have none in common."
                : $"The model '{model}' is not enabled for this app. Allowed: {string.Join(", ", allowed)}.");
        }

        int appCap = Math.Min(limits.MaxOutputTokens ?? int.MaxValue, options.Value.MaxOutputTokensLimit);
        if (requestedOutputTokens > appCap)
        {
            return Reject(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                string.Create(CultureInfo.InvariantCulture, $"maxOutputTokens may be at most {appCap} for this app."));
        }

        var quotas = new List<QuotaCounter>(3);
        if (limits.TokensPerDay is not null || limits.TokensPerMonth is not null)
        {
            var (day, month) = await usage.GetAppUsageAsync(appId, now, cancellationToken);
            if (limits.TokensPerDay is { } perDay)
            {
                if ((day?.Tokens ?? 0) >= perDay)
                {
                    return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.QuotaExceeded,
                        "This app used all its tokens for today.", (int)(now.Date.AddDays(1) - now).TotalSeconds);
                }

                quotas.Add(UsageStore.AppDayLimit(appId, now, perDay, day?.Tokens ?? 0));
            }

            if (limits.TokensPerMonth is { } perMonth)
            {
                if ((month?.Tokens ?? 0) >= perMonth)
                {
                    return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.QuotaExceeded,
                        "This app used all its tokens for this month.", SecondsToNextMonth(now));
                }

                quotas.Add(UsageStore.AppMonthLimit(appId, now, perMonth, month?.Tokens ?? 0));
            }
        }

        var allowance = AllowanceOf(user, controls);
        if (allowance is not null)
        {
            long used = (await usage.GetUserMonthAsync(appId, pseudonym, now, cancellationToken))?.Tokens ?? 0;
            if (used >= allowance.MonthlyTokens)
            {
                return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.QuotaExceeded,
                    "You used your token allowance for this month.", SecondsToNextMonth(now));
            }

            quotas.Add(UsageStore.UserMonthLimit(appId, pseudonym, now, allowance.MonthlyTokens, used));
        }

        int maxOutputTokens = requestedOutputTokens ?? Math.Min(options.Value.DefaultMaxOutputTokens, appCap);
        if (quotas.Count > 0)
        {
            long cost = prompt.MaxPromptTokens + maxOutputTokens;
            if (await reservations.TryReserveAsync(prompt.RequestId, appId, pseudonym, quotas, cost, prompt.ExpiresAt + ReservationGrace) is { } full)
            {
                return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.QuotaExceeded, full.Counter.Scope switch
                {
                    "day" => "Prompts running now have reserved the rest of this app's tokens for today. Try again when they finish.",
                    "month" => "Prompts running now have reserved the rest of this app's tokens for this month. Try again when they finish.",
                    _ => "Your prompts running now have reserved the rest of your token allowance for this month. Try again when they finish.",
                }, ReservedRetryAfterSeconds);
            }
        }

        // The rate counters come last and the user's before the app's, so that a prompt rejected for another
        // reason uses no budget, and one user's rejected bursts do not use up the budget of the whole app.
        Admission? limited;
        try
        {
            limited = await RateLimitAsync(user, appId, pseudonym, limits, now, cancellationToken);
        }
        catch when (quotas.Count > 0)
        {
            // A client that disconnects cancels the request, and its reservation must not outlive it.
            await reservations.ReleaseAsync(prompt.RequestId, CancellationToken.None);
            throw;
        }

        if (limited is not null)
        {
            if (quotas.Count > 0)
            {
                await reservations.ReleaseAsync(prompt.RequestId, CancellationToken.None);
            }

            return limited;
        }

        return new Admission(maxOutputTokens, null, allowance, UsageLimited: quotas.Count > 0);
    }

    private async Task<Admission?> RateLimitAsync(ClaimsPrincipal user, string appId, string pseudonym, AppLimits limits, DateTime now,
        CancellationToken cancellationToken)
    {
        int secondsToNextMinute = 60 - now.Second;
        int? userRpm = Min(ClaimInt(user, UserTokens.UserRequestsPerMinuteClaim), limits.UserRequestsPerMinute);
        if (userRpm is { } rpm && await rates.HitAsync(RateCounterStore.UserScope(appId, pseudonym), now, cancellationToken) > rpm)
        {
            return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.RateLimited,
                "You sent too many prompts this minute. Try again shortly.", secondsToNextMinute);
        }

        if (limits.RequestsPerMinute is { } appRpm && await rates.HitAsync(RateCounterStore.AppScope(appId), now, cancellationToken) > appRpm)
        {
            return Reject(StatusCodes.Status429TooManyRequests, ErrorCodes.RateLimited,
                "This app sent too many prompts this minute. Try again shortly.", secondsToNextMinute);
        }

        return null;
    }

    /// <summary>
    /// Returns the user's monthly allowance: the lower of the token's and the host backend's, with the host
    /// backend's threshold taking precedence over the token's.
    /// </summary>
    public static UserAllowance? AllowanceOf(ClaimsPrincipal user, UserControls? controls)
    {
        long? tokens = ClaimLong(user, UserTokens.UserMonthlyTokensClaim) is { } fromToken
            ? Math.Min(fromToken, controls?.MonthlyTokenAllowance ?? long.MaxValue)
            : controls?.MonthlyTokenAllowance;
        int threshold = controls?.AllowanceThresholdPercent
            ?? ClaimInt(user, UserTokens.AllowanceThresholdClaim)
            ?? DefaultThresholdPercent;
        return tokens is { } monthly ? new UserAllowance(monthly, threshold) : null;
    }

    private static bool ClaimBool(ClaimsPrincipal user, string type) =>
        bool.TryParse(user.FindFirstValue(type), out bool value) && value;

    private static Admission Reject(int status, string code, string message, int? retryAfterSeconds = null) =>
        new(0, Submission.Rejected(status, code, message, retryAfterSeconds));

    private static int SecondsToNextMonth(DateTime now) =>
        (int)(new DateTime(now.Year, now.Month, 1, 0, 0, 0, DateTimeKind.Utc).AddMonths(1) - now).TotalSeconds;

    private static int? Min(int? a, int? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);

    private static int? ClaimInt(ClaimsPrincipal user, string type) =>
        int.TryParse(user.FindFirstValue(type), NumberStyles.Integer, CultureInfo.InvariantCulture, out int value) ? value : null;

    private static long? ClaimLong(ClaimsPrincipal user, string type) =>
        long.TryParse(user.FindFirstValue(type), NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) ? value : null;
}
