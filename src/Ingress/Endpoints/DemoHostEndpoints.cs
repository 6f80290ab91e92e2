using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>The demo user, and optional per-user controls so the demo page can show each state of the add-on.</summary>
public sealed record DemoTokenInput(
    string? UserId,
    long? MonthlyTokenAllowance = null,
    int? AllowanceThresholdPercent = null,
    bool? AddonDisabled = null,
    bool? FreeformDisabled = null);

/// <summary>
/// The backend of the demo host page (addon.html): it holds the demo app's credentials, as a real host's backend
/// does, and gives the page an end-user token, so the page itself never sees an app secret. Mapped only when
/// <c>Demo:AppId</c> and <c>Demo:AppSecret</c> are set (run.sh sets them for the app it creates).
/// </summary>
/// <remarks>
/// NOTE: a real host issues tokens only to users who signed in to the host. The demo has no sign-in of its own, so
/// anyone who reaches this route gets a token for any user id of the demo app; never set Demo:* on a shared server.
/// </remarks>
public static class DemoHostEndpoints
{
    public const string Path = "/demo/token";
    public const string AppIdSetting = "Demo:AppId";
    public const string AppSecretSetting = "Demo:AppSecret";

    public static IEndpointRouteBuilder MapDemoHostEndpoints(this IEndpointRouteBuilder endpoints, IConfiguration configuration)
    {
        string? appId = configuration[AppIdSetting];
        string? appSecret = configuration[AppSecretSetting];
        if (string.IsNullOrWhiteSpace(appId) || string.IsNullOrWhiteSpace(appSecret))
        {
            return endpoints;
        }

        var demoApp = new DemoApp(appId.Trim(), appSecret.Trim());
        endpoints.MapPost(Path, (HttpContext http, AppStore apps, UserTokens tokens, IOptions<AuthOptions> options) =>
            IssueTokenAsync(demoApp, http, apps, tokens, options.Value));
        return endpoints;
    }

    private static async Task<IResult> IssueTokenAsync(DemoApp demoApp, HttpContext http, AppStore apps, UserTokens tokens, AuthOptions options)
    {
        var (input, error) = await JsonBody.ReadAsync<DemoTokenInput>(http.Request, AddonEndpoints.UserControlRules);
        if (error is not null)
        {
            return error;
        }

        // The same rule as the host API's: ids with a leading '@' are reserved, and "@app" is the app's own backend.
        string userId = input!.UserId ?? "";
        if (ApiEndpoints.UserIdProblem(userId) is { } problem)
        {
            return ApiErrors.BadRequest(problem);
        }

        if (AddonEndpoints.UserControlProblem(input.MonthlyTokenAllowance, input.AllowanceThresholdPercent) is { } controlProblem)
        {
            return ApiErrors.BadRequest(controlProblem);
        }

        // The same check the host API makes on the app's credentials, so a stale Demo:AppSecret shows up here.
        if (await apps.VerifyAsync(demoApp.AppId, demoApp.AppSecret, http.RequestAborted) is not { } secretId)
        {
            return ApiErrors.Result(StatusCodes.Status503ServiceUnavailable, Contracts.ErrorCodes.ServiceUnavailable,
                "The demo host's app credentials (Demo:AppId, Demo:AppSecret) are not accepted. Restart run.sh to create a new demo app.");
        }

        var lifetime = TimeSpan.FromSeconds(options.DefaultTokenLifetimeSeconds);
        var (token, expiresAt) = tokens.Issue(demoApp.AppId, userId, secretId, lifetime, monthlyTokens: input.MonthlyTokenAllowance,
            controls: new UserTokenControls(input.AddonDisabled, input.FreeformDisabled, input.AllowanceThresholdPercent));
        http.Response.Headers.CacheControl = "no-store";
        return Results.Ok(new { token, expiresAt, userId, appId = demoApp.AppId });
    }

    /// <summary>A class, not a record, so that no generated ToString can print the secret.</summary>
    private sealed class DemoApp(string appId, string appSecret)
    {
        public string AppId { get; } = appId;

        public string AppSecret { get; } = appSecret;
    }
}
