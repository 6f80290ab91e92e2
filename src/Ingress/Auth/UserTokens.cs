using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using AddOnEvents.Ingress.Options;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AddOnEvents.Ingress.Auth;

/// <summary>Issues and describes the signed tokens that identify one end user of one app.</summary>
public sealed class UserTokens(IOptions<AuthOptions> options, TimeProvider clock)
{
    public const string Issuer = "addonevents";
    public const string Audience = "addonevents-addon";

    private readonly SymmetricSecurityKey _signingKey = new(options.Value.SigningKeyBytes());
    private readonly byte[] _pseudonymKey = HKDF.DeriveKey(HashAlgorithmName.SHA256, options.Value.SigningKeyBytes(), 32,
        info: "addonevents user pseudonym v1"u8.ToArray());
    private readonly JsonWebTokenHandler _handler = new();

    public SecurityKey SigningKey => _signingKey;

    /// <summary>Claim with the end user's own requests-per-minute limit, set by the host.</summary>
    public const string UserRequestsPerMinuteClaim = "user_rpm";

    /// <summary>Claim with the end user's token allowance per calendar month (UTC), set by the host.</summary>
    public const string UserMonthlyTokensClaim = "user_tokens_month";

    public (string Token, DateTimeOffset ExpiresAt) Issue(
        string appId, string userId, TimeSpan lifetime, int? requestsPerMinute = null, long? monthlyTokens = null)
    {
        var now = clock.GetUtcNow();
        var expires = now + lifetime;
        string token = _handler.CreateToken(new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = Audience,
            IssuedAt = now.UtcDateTime,
            NotBefore = now.UtcDateTime,
            Expires = expires.UtcDateTime,
            Claims = Claims(appId, userId, requestsPerMinute, monthlyTokens),
            SigningCredentials = new SigningCredentials(_signingKey, SecurityAlgorithms.HmacSha256),
        });
        return (token, expires);
    }

    private static Dictionary<string, object> Claims(string appId, string userId, int? requestsPerMinute, long? monthlyTokens)
    {
        var claims = new Dictionary<string, object>
        {
            [AuthSchemes.AppIdClaim] = appId,
            [AuthSchemes.UserIdClaim] = userId,
        };
        if (requestsPerMinute is { } rpm)
        {
            claims[UserRequestsPerMinuteClaim] = rpm;
        }

        if (monthlyTokens is { } tokens)
        {
            claims[UserMonthlyTokensClaim] = tokens;
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
