using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using MongoDB.Bson;

namespace AddOnEvents.Tests;

/// <summary>
/// The per-user endpoints reached through raw paths that ASP.NET Core routing normalizes or decodes differently
/// from the user id segment, and the log line of a request to them that fails.
/// </summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class UserPathTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task EncodedAppIdReadsLiteralUser()
    {
        var (app, developer) = await AppWithUsersAsync("x/y");

        using var response = await SendRawAsync(developer, HttpMethod.Get, $"/api/apps/{EncodedAppId(app)}/users/x%252Fy");
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("x%2Fy", body.GetProperty("userId").GetString());
        Assert.Empty(body.GetProperty("results").EnumerateArray());
        Assert.Empty(body.GetProperty("usage").EnumerateArray());
    }

    [Fact]
    public async Task EncodedAppIdSwitchesOffLiteralUser()
    {
        var (app, developer) = await AppWithUsersAsync("x/y");
        using var content = JsonContent.Create(new { addonDisabled = true });

        using var response = await SendRawAsync(developer, HttpMethod.Put, $"/api/apps/{EncodedAppId(app)}/users/x%252Fy/controls", content);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var slashUser = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/x%2Fy");
        var literalUser = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/x%252Fy");
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "x/y")));
        using var prompt = await user.PostAsJsonAsync("/api/prompts", new { prompt = "still on?" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("x%2Fy", body.GetProperty("userId").GetString());
        Assert.Equal(JsonValueKind.Null, slashUser.GetProperty("controls").ValueKind);
        Assert.True(literalUser.GetProperty("controls").GetProperty("addonDisabled").GetBoolean());
        Assert.Equal(HttpStatusCode.Accepted, prompt.StatusCode);
    }

    [Fact]
    public async Task DotSegmentEraseIsRejected()
    {
        var (app, developer) = await AppWithUsersAsync("a/b");

        using var response = await SendRawAsync(developer, HttpMethod.Delete, $"/api/apps/./{app.AppId}/users/a%252Fb");
        var error = await response.Content.ReadFromJsonAsync<JsonElement>();
        var slashUser = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/a%2Fb");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Contains("Percent-encode the user id once", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Single(slashUser.GetProperty("results").EnumerateArray());
    }

    [Theory]
    [InlineData("GET", "/api/apps/{appId}/users/./a%2Fb")]
    [InlineData("GET", "/api/apps/{appId}/users/x/../a%2Fb")]
    [InlineData("GET", "/api/apps/{appId}/%2E/users/a%2Fb")]
    [InlineData("PUT", "/api/apps/{appId}/users/a%2Fb/./controls")]
    [InlineData("GET", "/api/apps/{appId}/users/./controls")]
    public async Task DotSegmentsAreRejected(string method, string path)
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var content = method == "PUT" ? JsonContent.Create(new { addonDisabled = true }) : null;

        using var response = await SendRawAsync(developer, new HttpMethod(method), path.Replace("{appId}", app.AppId, StringComparison.Ordinal), content);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString());
    }

    [Theory]
    [InlineData("team%2Falice", "team/alice")]
    [InlineData("team%2falice", "team/alice")]
    [InlineData("50%25%2Fhalf", "50%/half")]
    [InlineData("%75ser", "user")]
    public async Task UserSegmentIsDecodedOnce(string segment, string expected)
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var response = await SendRawAsync(developer, HttpMethod.Get, $"/api/apps/{app.AppId}/users/{segment}");
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(expected, body.GetProperty("userId").GetString());
    }

    [Fact]
    public async Task FailedRequestLogsRouteNotUserId()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string marker = Guid.NewGuid().ToString("N");
        string userId = $"john.smith.{marker}@example.org";

        // Controls that the store cannot deserialize make the request throw past every endpoint check.
        string pseudonym = system.ServicesOf(nameof(Ingress)).GetRequiredService<UserTokens>().Pseudonym(app.AppId, userId);
        var controls = system.Database.GetCollection<BsonDocument>("userControls");
        await controls.InsertOneAsync(new BsonDocument { ["_id"] = $"{app.AppId}|{pseudonym}", ["addonDisabled"] = "not a boolean" });

        using var response = await developer.GetAsync($"/api/apps/{app.AppId}/users/{Uri.EscapeDataString(userId)}");
        await controls.DeleteOneAsync(new BsonDocument("_id", $"{app.AppId}|{pseudonym}"));

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        Assert.Contains(system.Logs.Entries, e => e.Contains("[1007] GET request to /api/apps/{appId}/users/{userId} failed with", StringComparison.Ordinal));
        Assert.DoesNotContain(system.Logs.Entries, e => e.Contains(marker, StringComparison.Ordinal));
    }

    /// <summary>Creates an app with an active key, and one stored prompt result for each of the given users.</summary>
    private async Task<(TestApp App, HttpClient Developer)> AppWithUsersAsync(params string[] userIds)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-userpath-" + Guid.NewGuid().ToString("N"));
        foreach (string userId in userIds)
        {
            string token = await system.IssueUserTokenAsync(app, userId);
            await using var client = await system.ConnectAsync(token);
            await client.WaitForResultAsync(await system.PostPromptAsync(token, "remember " + userId), Patience);
        }

        return (app, system.CreateClient(SystemFixture.Basic(app)));
    }

    /// <summary>Percent-encodes the '_' of the app id, so the raw path differs from the decoded one.</summary>
    private static string EncodedAppId(TestApp app) => app.AppId.Replace("_", "%5F", StringComparison.Ordinal);

    /// <summary>Sends a request whose path reaches the server byte for byte, without dot-segment removal or unescaping.</summary>
    private async Task<HttpResponseMessage> SendRawAsync(HttpClient client, HttpMethod method, string rawPath, HttpContent? content = null)
    {
        var uri = new Uri(system.IngressUrl.GetLeftPart(UriPartial.Authority) + rawPath,
            new UriCreationOptions { DangerousDisablePathAndQueryCanonicalization = true });
        using var request = new HttpRequestMessage(method, uri) { Content = content };
        return await client.SendAsync(request);
    }
}
