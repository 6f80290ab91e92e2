using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Options;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Auth;

public static class AuthSchemes
{
    /// <summary>HTTP Basic with an app id and app secret: the developer console and the host backend.</summary>
    public const string AppCredentials = "AppCredentials";

    /// <summary>Bearer token of the operator, from configuration.</summary>
    public const string Admin = "Admin";

    /// <summary>Short-lived signed token of one end user of one app: the browser add-on.</summary>
    public const string UserToken = "UserToken";

    /// <summary>Policy that accepts an end-user token or app credentials, for the OpenAI-compatible endpoint.</summary>
    public const string AnyCaller = "AnyCaller";

    /// <summary>User id given to requests made with app credentials rather than for an end user.</summary>
    public const string AppAsUser = "@app";

    public const string AppIdClaim = "app_id";

    public const string UserIdClaim = "sub";

    /// <summary>Claim naming the app secret that authenticated the caller or issued the token.</summary>
    public const string SecretIdClaim = "app_secret_id";
}

/// <summary>Authenticates <c>Authorization: Basic base64(appId:appSecret)</c> against the stored secret hashes.</summary>
public sealed class AppCredentialsHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory loggerFactory,
    UrlEncoder encoder,
    AppStore apps) : AuthenticationHandler<AuthenticationSchemeOptions>(options, loggerFactory, encoder)
{
    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string? header = Request.Headers.Authorization;
        string? appId, secret;
        if (header is not null && header.StartsWith("Basic ", StringComparison.OrdinalIgnoreCase))
        {
            string decoded;
            try
            {
                decoded = Encoding.UTF8.GetString(Convert.FromBase64String(header["Basic ".Length..].Trim()));
            }
            catch (FormatException)
            {
                return AuthenticateResult.Fail("The Basic credentials are not valid base64.");
            }

            int colon = decoded.IndexOf(':', StringComparison.Ordinal);
            (appId, secret) = colon > 0 ? (decoded[..colon], decoded[(colon + 1)..]) : (null, null);
        }
        else if (header is not null && header.StartsWith("Bearer app_", StringComparison.Ordinal))
        {
            // OpenAI SDKs send their key as a Bearer token, so app credentials also work as "appId.appSecret".
            string token = header["Bearer ".Length..].Trim();
            int dot = token.IndexOf('.', StringComparison.Ordinal);
            (appId, secret) = dot > 0 ? (token[..dot], token[(dot + 1)..]) : (null, null);
        }
        else
        {
            return AuthenticateResult.NoResult();
        }

        string? secretId = appId is null || secret is null ? null : await apps.VerifyAsync(appId, secret, Context.RequestAborted);
        if (secretId is null)
        {
            return AuthenticateResult.Fail("The app id or app secret is wrong.");
        }

        var identity = new ClaimsIdentity(
            [
                new Claim(AuthSchemes.AppIdClaim, appId!), new Claim(AuthSchemes.UserIdClaim, AuthSchemes.AppAsUser),
                new Claim(AuthSchemes.SecretIdClaim, secretId),
            ], Scheme.Name);
        return AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name));
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        if (Response.HasStarted)
        {
            return;
        }

        // Credentials that were sent but are wrong get that said, rather than a request to send them.
        var outcome = await HandleAuthenticateOnceSafeAsync();
        Response.Headers.WWWAuthenticate = "Basic realm=\"AddOnEvents\", charset=\"UTF-8\"";
        await ApiErrors.WriteAsync(Context, StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized,
            outcome.Failure?.Message ?? "Send the app id and app secret with HTTP Basic authentication.");
    }
}

/// <summary>Authenticates <c>Authorization: Bearer {Auth:AdminToken}</c>.</summary>
public sealed class AdminTokenHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory loggerFactory,
    UrlEncoder encoder,
    IOptions<AuthOptions> auth) : AuthenticationHandler<AuthenticationSchemeOptions>(options, loggerFactory, encoder)
{
    protected override Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string? header = Request.Headers.Authorization;
        if (header is null || !header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return Task.FromResult(AuthenticateResult.NoResult());
        }

        byte[] presented = SHA256.HashData(Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim()));
        byte[] expected = SHA256.HashData(Encoding.UTF8.GetBytes(auth.Value.AdminToken));
        if (!CryptographicOperations.FixedTimeEquals(presented, expected))
        {
            return Task.FromResult(AuthenticateResult.Fail("The admin token is wrong."));
        }

        var identity = new ClaimsIdentity([new Claim(ClaimTypes.Role, "operator")], Scheme.Name);
        return Task.FromResult(AuthenticateResult.Success(new AuthenticationTicket(new ClaimsPrincipal(identity), Scheme.Name)));
    }

    protected override Task HandleChallengeAsync(AuthenticationProperties properties) =>
        ApiErrors.WriteAsync(Context, StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized,
            "Send the operator's admin token as a Bearer token.");
}
