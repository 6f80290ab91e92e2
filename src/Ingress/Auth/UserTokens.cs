using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Options;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AddOnEvents.Ingress.Auth;

/// <summary>Per-user switches a host may put into a token.</summary>
public sealed record UserTokenControls(bool? AddonDisabled, bool? FreeformDisabled, int? AllowanceThresholdPercent);

/// <summary>Issues and describes the signed tokens that identify one end user of one app.</summary>
public sealed class UserTokens(IOptions<AuthOptions> options, TimeProvider clock)
{
    public const string Issuer = "addonevents";
    public const string Audience = "addonevents-addon";

    private readonly SymmetricSecurityKey _signingKey = new(options.Value.SigningKeyBytes());
    private readonly SymmetricSecurityKey[] _previousSigningKeys =
        [.. options.Value.PreviousSigningKeyBytes().Select(key => new SymmetricSecurityKey(key))];

    // Derived from Auth:UserIdKey, not from the signing key, so that rotating the signing key keeps every pseudonym
    // and with it the per-user data stored under it.
    private readonly byte[] _pseudonymKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, options.Value.UserIdKeyBytes(), 32,
        info: "addonevents user pseudonym v1"u8.ToArray());
    private readonly JsonWebTokenHandler _handler = new();

    public SecurityKey SigningKey => _signingKey;

    /// <summary>Keys that validate end-user tokens: the current signing key first, then Auth:PreviousTokenSigningKeys.</summary>
    public IReadOnlyList<SecurityKey> ValidationKeys => [_signingKey, .. _previousSigningKeys];

    /// <summary>Claim with the end user's own requests-per-minute limit, set by the host.</summary>
    public const string UserRequestsPerMinuteClaim = "user_rpm";

    /// <summary>Claim with the end user's token allowance per calendar month (UTC), set by the host.</summary>
    public const string UserMonthlyTokensClaim = "user_tokens_month";

    /// <summary>Claim with the share of the allowance, in percent, at which the host wants to be told.</summary>
    public const string AllowanceThresholdClaim = "allowance_threshold_pct";

    /// <summary>Claim set to true when the host switched the add-on off for this user.</summary>
    public const string AddonDisabledClaim = "addon_disabled";

    /// <summary>Claim set to true when the host allows only preset actions, no free-form prompts, for this user.</summary>
    public const string FreeformDisabledClaim = "freeform_disabled";

    /// <param name="secretId">The app secret that requests the token. Revoking that secret ends the token too.</param>
    public (string Token, DateTimeOffset ExpiresAt) Issue(
        string appId, string userId, string secretId, TimeSpan lifetime, int? requestsPerMinute = null, long? monthlyTokens = null,
        UserTokenControls? controls = null)
    {
        var now = clock.GetUtcNow();

        // A token's expiry is in whole seconds, so the time returned to the caller is cut to the second as well.
        var expires = DateTimeOffset.FromUnixTimeSeconds((now + lifetime).ToUnixTimeSeconds());
        string token = _handler.CreateToken(new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = Audience,
            IssuedAt = now.UtcDateTime,
            NotBefore = now.UtcDateTime,
            Expires = expires.UtcDateTime,
            Claims = Claims(appId, userId, secretId, requestsPerMinute, monthlyTokens, controls),
            SigningCredentials = new SigningCredentials(_signingKey, SecurityAlgorithms.HmacSha256),
        });
        return (token, expires);
    }

    private static Dictionary<string, object> Claims(
        string appId, string userId, string secretId, int? requestsPerMinute, long? monthlyTokens, UserTokenControls? controls)
    {
        var claims = new Dictionary<string, object>
        {
            [AuthSchemes.AppIdClaim] = appId,
            [AuthSchemes.UserIdClaim] = userId,
            [AuthSchemes.SecretIdClaim] = secretId,
        };
        if (requestsPerMinute is { } rpm)
        {
            claims[UserRequestsPerMinuteClaim] = rpm;
        }

        if (monthlyTokens is { } tokens)
        {
            claims[UserMonthlyTokensClaim] = tokens;
        }

        if (controls?.AllowanceThresholdPercent is { } threshold)
        {
            claims[AllowanceThresholdClaim] = threshold;
        }

        if (controls?.AddonDisabled == true)
        {
            claims[AddonDisabledClaim] = true;
        }

        if (controls?.FreeformDisabled == true)
        {
            claims[FreeformDisabledClaim] = true;
        }

        return claims;
    }

    /// <summary>
    /// Returns a stable pseudonym for a host's user id within one app (HMAC-SHA256, base64url). Messages and
    /// SignalR user routing carry it in place of the host's id, which may be an email address.
    /// </summary>
    public string Pseudonym(string appId, string userId)
    {
        byte[] mac = HMACSHA256.HashData(_pseudonymKey, Encoding.UTF8.GetBytes(appId + "\n" + userId));
        return "u_" + Convert.ToBase64String(mac, 0, 18).Replace('+', '-').Replace('/', '_');
    }

    public string? Pseudonym(ClaimsPrincipal? user)
    {
        string? appId = user?.FindFirstValue(AuthSchemes.AppIdClaim);
        string? userId = user?.FindFirstValue(AuthSchemes.UserIdClaim);
        return appId is null || userId is null ? null : Pseudonym(appId, userId);
    }
}

/// <summary>Routes SignalR messages by user pseudonym, so every connection of one end user gets their answers.</summary>
public sealed class PseudonymUserIdProvider(UserTokens tokens) : IUserIdProvider
{
    public string? GetUserId(HubConnectionContext connection) => tokens.Pseudonym(connection.User);
}
