using System.Globalization;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Endpoints;

public sealed record AppInput(string? Name);

public sealed record UserTokenInput(string? UserId, int? TtlSeconds);

/// <summary>The operator's, the host backend's and the add-on's endpoints.</summary>
public static class ApiEndpoints
{
    public static IEndpointRouteBuilder MapApiEndpoints(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapPost("/api/admin/apps", CreateAppAsync).RequireAuthorization(AuthSchemes.Admin);
        endpoints.MapPost("/api/apps/{appId}/user-tokens", IssueUserToken).RequireAuthorization(AuthSchemes.AppCredentials);
        endpoints.MapPost("/api/prompts", SubmitPromptAsync).RequireAuthorization(AuthSchemes.UserToken);
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
        return Results.Created($"/api/apps/{appId}", new { appId, appSecret = secret });
    }

    private static async Task<IResult> IssueUserToken(string appId, HttpContext http, UserTokens tokens, IOptions<AuthOptions> options)
    {
        if (KeyEndpoints.RejectOtherApp(http.User, appId) is { } forbidden)
        {
            return forbidden;
        }

        var (input, error) = await JsonBody.ReadAsync<UserTokenInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        string userId = input!.UserId ?? "";
        if (userId.Length is 0 or > 128 || userId.Any(char.IsControl) || userId != userId.Trim())
        {
            return ApiErrors.BadRequest("userId must be 1 to 128 characters, without control characters or surrounding spaces.");
        }

        var auth = options.Value;
        int seconds = input.TtlSeconds ?? auth.DefaultTokenLifetimeSeconds;
        if (seconds < 30 || seconds > auth.MaxTokenLifetimeSeconds)
        {
            return ApiErrors.BadRequest(string.Create(CultureInfo.InvariantCulture,
                $"ttlSeconds must be between 30 and {auth.MaxTokenLifetimeSeconds}."));
        }

        var (token, expiresAt) = tokens.Issue(appId, userId, TimeSpan.FromSeconds(seconds));
        return Results.Ok(new { token, expiresAt });
    }

    private static async Task<IResult> SubmitPromptAsync(HttpContext http, PromptSubmitter submitter)
    {
        var (input, error) = await JsonBody.ReadAsync<PromptInput>(http.Request);
        if (error is not null)
        {
            return error;
        }

        var submission = await submitter.SubmitAsync(http.User, input!, http);
        if (submission.Error is { } rejected)
        {
            if (submission.Status == StatusCodes.Status503ServiceUnavailable)
            {
                http.Response.Headers.RetryAfter = "5";
            }

            return ApiErrors.Result(submission.Status, rejected.Code, rejected.Message);
        }

        return Results.Accepted(value: new { requestId = submission.RequestId });
    }
}
