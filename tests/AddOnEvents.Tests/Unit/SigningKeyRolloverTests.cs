using System.Security.Cryptography;
using AddOnEvents.Ingress;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AddOnEvents.Tests.Unit;

/// <summary>
/// A change of Auth:TokenSigningKey, with Auth:UserIdKey set to the old key and the old key listed in
/// Auth:PreviousTokenSigningKeys, keeps user pseudonyms and sealed user references and accepts tokens already issued.
/// </summary>
public sealed class SigningKeyRolloverTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    private readonly string _oldKey = NewKey();
    private readonly string _newKey = NewKey();

    [Fact]
    public void PseudonymSurvivesRotationWithUserIdKey()
    {
        var before = Tokens(new AuthOptions { TokenSigningKey = _oldKey });
        var after = Tokens(new AuthOptions { TokenSigningKey = _newKey, UserIdKey = _oldKey });

        Assert.Equal(before.Pseudonym("app-1", "alice@example.com"), after.Pseudonym("app-1", "alice@example.com"));
    }

    [Fact]
    public void PseudonymChangesWithSigningKeyAlone()
    {
        var before = Tokens(new AuthOptions { TokenSigningKey = _oldKey });
        var after = Tokens(new AuthOptions { TokenSigningKey = _newKey });

        Assert.NotEqual(before.Pseudonym("app-1", "alice@example.com"), after.Pseudonym("app-1", "alice@example.com"));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData("  ")]
    public void UnsetUserIdKeyMeansSigningKey(string? userIdKey)
    {
        var signingKeyOnly = Tokens(new AuthOptions { TokenSigningKey = _oldKey, UserIdKey = userIdKey });
        var explicitUserIdKey = Tokens(new AuthOptions { TokenSigningKey = _newKey, UserIdKey = _oldKey });

        Assert.Equal(explicitUserIdKey.Pseudonym("app-1", "bob"), signingKeyOnly.Pseudonym("app-1", "bob"));
    }

    [Fact]
    public void UserReferenceSealedBeforeRotationOpens()
    {
        var before = new UserRefCipher(Options.Create(new AuthOptions { TokenSigningKey = _oldKey }));
        var after = new UserRefCipher(Options.Create(new AuthOptions { TokenSigningKey = _newKey, UserIdKey = _oldKey }));

        byte[] sealedBefore = before.Seal("app-1", "alice@example.com");

        Assert.Equal("alice@example.com", after.Open("app-1", sealedBefore));
    }

    [Fact]
    public async Task TokenOfPreviousKeyIsAccepted()
    {
        await using var ingress = BuildIngress(_newKey, previousKey: _oldKey);
        string token = IssueToken(_oldKey);

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationOf(ingress)).WaitAsync(Patience);

        Assert.True(result.IsValid, result.Exception?.Message);
    }

    [Fact]
    public async Task TokenOfCurrentKeyIsAccepted()
    {
        await using var ingress = BuildIngress(_newKey, previousKey: _oldKey);
        string token = IssueToken(_newKey);

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationOf(ingress)).WaitAsync(Patience);

        Assert.True(result.IsValid, result.Exception?.Message);
    }

    [Fact]
    public async Task TokenOfUnknownKeyIsRejected()
    {
        await using var ingress = BuildIngress(_newKey, previousKey: _oldKey);
        string token = IssueToken(NewKey());

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationOf(ingress)).WaitAsync(Patience);

        Assert.False(result.IsValid);
        Assert.IsAssignableFrom<SecurityTokenInvalidSignatureException>(result.Exception);
    }

    [Fact]
    public async Task TokenOfDroppedPreviousKeyIsRejected()
    {
        await using var ingress = BuildIngress(_newKey, previousKey: null);
        string token = IssueToken(_oldKey);

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationOf(ingress)).WaitAsync(Patience);

        Assert.False(result.IsValid);
        Assert.IsAssignableFrom<SecurityTokenInvalidSignatureException>(result.Exception);
    }

    [Fact]
    public async Task TokenExpiredSecondsAgoIsRejected()
    {
        await using var ingress = BuildIngress(_newKey, previousKey: null);
        var fortySecondsAgo = new ShiftedClock(TimeSpan.FromSeconds(-40));
        string token = new UserTokens(Options.Create(new AuthOptions { TokenSigningKey = _newKey }), fortySecondsAgo)
            .Issue("app-1", "alice", "secret-1", TimeSpan.FromSeconds(30)).Token;

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationOf(ingress)).WaitAsync(Patience);

        Assert.False(result.IsValid);
        Assert.IsAssignableFrom<SecurityTokenExpiredException>(result.Exception);
    }

    [Fact]
    public void ReturnedExpiryMatchesTokenExpiry()
    {
        var (token, expiresAt) = Tokens(new AuthOptions { TokenSigningKey = _newKey }).Issue("app-1", "alice", "secret-1", TimeSpan.FromSeconds(30));

        Assert.Equal(new JsonWebToken(token).ValidTo, expiresAt.UtcDateTime);
    }

    [Theory]
    [InlineData("Auth:UserIdKey", "not base64!")]
    [InlineData("Auth:UserIdKey", "c2hvcnQ=")]
    [InlineData("Auth:PreviousTokenSigningKeys:0", "c2hvcnQ=")]
    public void MalformedKeySettingStopsStart(string setting, string value)
    {
        // Mapping the hub already reads the auth options, so Build fails before any start.
        var error = Assert.Throws<OptionsValidationException>(() =>
            ((IDisposable)BuildIngress(_newKey, previousKey: null, new() { [setting] = value })).Dispose());

        Assert.Contains(setting.Split(':')[1], error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EmptyKeySettingsAreIgnored()
    {
        // Compose passes optional variables that .env leaves out as empty strings.
        await using var ingress = BuildIngress(_oldKey, previousKey: null, new()
        {
            ["Auth:UserIdKey"] = "",
            ["Auth:PreviousTokenSigningKeys:0"] = "",
        });
        var tokens = ingress.Services.GetRequiredService<UserTokens>();

        Assert.Single(tokens.ValidationKeys);
        Assert.Equal(Tokens(new AuthOptions { TokenSigningKey = _oldKey }).Pseudonym("app-1", "bob"), tokens.Pseudonym("app-1", "bob"));
    }

    [Fact]
    public void NewTokensAreSignedWithCurrentKey()
    {
        var tokens = Tokens(new AuthOptions { TokenSigningKey = _newKey, PreviousTokenSigningKeys = [_oldKey] });

        Assert.Equal(2, tokens.ValidationKeys.Count);
        Assert.Same(tokens.SigningKey, tokens.ValidationKeys[0]);
    }

    private static string NewKey() => Convert.ToBase64String(RandomNumberGenerator.GetBytes(48));

    private static UserTokens Tokens(AuthOptions options) => new(Options.Create(options), TimeProvider.System);

    private static string IssueToken(string signingKey) =>
        Tokens(new AuthOptions { TokenSigningKey = signingKey }).Issue("app-1", "alice", "secret-1", TimeSpan.FromMinutes(5)).Token;

    /// <summary>Builds, without starting, an Ingress whose settings name only what the auth options need.</summary>
    private static WebApplication BuildIngress(string signingKey, string? previousKey, Dictionary<string, string?>? extra = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Auth:AdminToken"] = new string('a', 32),
            ["Auth:TokenSigningKey"] = signingKey,
        };
        if (previousKey is not null)
        {
            settings["Auth:PreviousTokenSigningKeys:0"] = previousKey;
        }

        foreach (var (name, value) in extra ?? [])
        {
            settings[name] = value;
        }

        return IngressApp.Build([], builder => builder.Configuration.AddInMemoryCollection(settings));
    }

    private static TokenValidationParameters ValidationOf(WebApplication ingress) =>
        ingress.Services.GetRequiredService<IOptionsMonitor<JwtBearerOptions>>().Get(AuthSchemes.UserToken).TokenValidationParameters;

    private sealed class ShiftedClock(TimeSpan shift) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + shift;
    }
}
