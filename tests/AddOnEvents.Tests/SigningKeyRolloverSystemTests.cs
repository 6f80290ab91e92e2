using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.JsonWebTokens;

namespace AddOnEvents.Tests;

/// <summary>
/// A second Ingress with a new Auth:TokenSigningKey, Auth:UserIdKey set to the suite's signing key and that key in
/// Auth:PreviousTokenSigningKeys: the host's per-user data and the tokens already issued carry over.
/// </summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class SigningKeyRolloverSystemTests(SystemFixture system)
{
    [Fact]
    public async Task RotatedIngressKeepsUsersAndOldTokens()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-rollover-" + Guid.NewGuid().ToString("N"));
        using (var host = system.CreateClient(SystemFixture.Basic(app)))
        using (var set = await host.PutAsJsonAsync($"/api/apps/{app.AppId}/users/switched-off/controls", new { addonDisabled = true }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        string oldTokenOfActive = await system.IssueUserTokenAsync(app, "active-user");
        string oldTokenOfSwitchedOff = await system.IssueUserTokenAsync(app, "switched-off");
        var rotated = new Uri(await system.StartServiceAsync("Ingress2", new Dictionary<string, string?>
        {
            ["Auth:TokenSigningKey"] = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)),
            ["Auth:UserIdKey"] = system.Secrets.TokenSigningKey,
            ["Auth:PreviousTokenSigningKeys:0"] = system.Secrets.TokenSigningKey,
        }));
        HttpStatusCode activeStatus, unknownKeyStatus;
        string? oldTokenCode, newTokenCode;
        JsonElement exported;
        try
        {
            string newTokenOfSwitchedOff = await IssueTokenAsync(app, "switched-off", rotated);
            using var active = await PostPromptAsync(oldTokenOfActive, rotated);
            using var switchedOffOld = await PostPromptAsync(oldTokenOfSwitchedOff, rotated);
            using var switchedOffNew = await PostPromptAsync(newTokenOfSwitchedOff, rotated);
            using var unknownKey = await PostPromptAsync(ResignWithUnknownKey(oldTokenOfActive), rotated);
            using var host = system.CreateClient(SystemFixture.Basic(app), rotated);
            exported = await host.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/switched-off");
            activeStatus = active.StatusCode;
            unknownKeyStatus = unknownKey.StatusCode;
            oldTokenCode = await CodeOf(switchedOffOld);
            newTokenCode = await CodeOf(switchedOffNew);
        }
        finally
        {
            await system.StopServiceAsync("Ingress2");
        }

        Assert.Equal(HttpStatusCode.Accepted, activeStatus);
        Assert.Equal("addon_disabled_for_user", oldTokenCode);
        Assert.Equal("addon_disabled_for_user", newTokenCode);
        Assert.Equal(HttpStatusCode.Unauthorized, unknownKeyStatus);
        Assert.True(exported.GetProperty("controls").GetProperty("addonDisabled").GetBoolean());
    }

    private async Task<string> IssueTokenAsync(TestApp app, string userId, Uri ingress)
    {
        using var host = system.CreateClient(SystemFixture.Basic(app), ingress);
        using var response = await host.PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens", new { userId });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    private async Task<HttpResponseMessage> PostPromptAsync(string token, Uri ingress)
    {
        using var user = system.CreateClient(SystemFixture.Bearer(token), ingress);
        return await user.PostAsJsonAsync("/api/prompts", new { prompt = "after the rotation" });
    }

    private static async Task<string?> CodeOf(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString();

    /// <summary>Returns a copy of <paramref name="token"/>, with every claim the same, signed with a fresh random key.</summary>
    private static string ResignWithUnknownKey(string token)
    {
        var original = new JsonWebToken(token);
        var forger = new UserTokens(Options.Create(new AuthOptions { TokenSigningKey = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)) }),
            TimeProvider.System);
        return forger.Issue(
            original.GetClaim(AuthSchemes.AppIdClaim).Value,
            original.GetClaim(AuthSchemes.UserIdClaim).Value,
            original.GetClaim(AuthSchemes.SecretIdClaim).Value,
            TimeSpan.FromMinutes(10)).Token;
    }
}
