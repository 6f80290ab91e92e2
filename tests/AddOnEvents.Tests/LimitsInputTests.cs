using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Tests;

/// <summary>List entries in request bodies that are null or malformed get 400, never a crash, and change nothing.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class LimitsInputTests(SystemFixture system)
{
    [Theory]
    [InlineData("""{"allowedModels":["gpt-4o-mini",null]}""")]
    [InlineData("""{"allowedModels":["gpt-4o-mini",""]}""")]
    [InlineData("""{"allowedModels":["gpt-4o-mini","gpt 4o"]}""")]
    [InlineData("""{"allowedModels":["gpt-4o-mini","openai/gpt-4o"]}""")]
    [InlineData("""{"allowedModels":["gpt-4o-mini","gpt-4o\u0000"]}""")]
    public async Task InvalidAllowedModelIsRejected(string body)
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using (var set = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", """{"tokensPerDay":5}"""))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var response = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", body);
        var error = await response.Content.ReadFromJsonAsync<JsonElement>();
        var stored = await admin.GetFromJsonAsync<JsonElement>($"/api/admin/apps/{app.AppId}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.StartsWith("allowedModels[1] is not a model name.", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(5, stored.GetProperty("limits").GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(JsonValueKind.Null, stored.GetProperty("limits").GetProperty("allowedModels").ValueKind);
    }

    [Fact]
    public async Task DeveloperLimitsOnlyTightenTheOperators()
    {
        var app = await system.CreateAppAsync();
        var other = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-developer-limits-" + Guid.NewGuid().ToString("N"));
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var otherDeveloper = system.CreateClient(SystemFixture.Basic(other));
        using (var set = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", """{"tokensPerDay":10,"allowedModels":["gpt-4o","o1"]}"""))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var saved = await PutJsonAsync(developer, $"/api/apps/{app.AppId}/limits",
            """{"tokensPerDay":1000,"maxOutputTokens":50,"allowedModels":["gpt-4o-mini","gpt-4o"]}""");
        using var foreign = await PutJsonAsync(otherDeveloper, $"/api/apps/{app.AppId}/limits", """{"tokensPerDay":1}""");
        using var invalid = await PutJsonAsync(developer, $"/api/apps/{app.AppId}/limits", """{"tokensPerDay":0}""");
        using var inexact = await PutJsonAsync(developer, $"/api/apps/{app.AppId}/limits", """{"tokensPerMonth":9007199254740992}""");
        var read = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/limits");
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "limited-by-developer")));
        using var otherModel = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi", model = "gpt-4o-mini" });
        using var tooLong = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi", model = "gpt-4o", maxOutputTokens = 51 });
        using var fits = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi", model = "gpt-4o", maxOutputTokens = 50 });

        Assert.Equal(HttpStatusCode.OK, saved.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, foreign.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, inexact.StatusCode);
        var effective = read.GetProperty("effective");
        Assert.Equal(10, effective.GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(50, effective.GetProperty("maxOutputTokens").GetInt32());
        Assert.Equal(["gpt-4o"], effective.GetProperty("allowedModels").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(1000, read.GetProperty("limits").GetProperty("tokensPerDay").GetInt64());
        Assert.Equal(HttpStatusCode.BadRequest, otherModel.StatusCode);
        Assert.Equal("model_not_allowed", (await otherModel.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, fits.StatusCode);
    }

    [Fact]
    public async Task ValidAllowedModelsAreStored()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var response = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", """{"allowedModels":["gpt-4o-mini","ft:gpt-4o:acme.v2_1"]}""");
        var stored = await admin.GetFromJsonAsync<JsonElement>($"/api/admin/apps/{app.AppId}");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(2, stored.GetProperty("limits").GetProperty("allowedModels").GetArrayLength());
    }

    [Fact]
    public async Task EmptyAllowedModelsIsRejected()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using (var set = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", """{"allowedModels":["gpt-4o-mini"]}"""))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var response = await PutJsonAsync(admin, $"/api/admin/apps/{app.AppId}/limits", """{"allowedModels":[]}""");
        var error = await response.Content.ReadFromJsonAsync<JsonElement>();
        var stored = await admin.GetFromJsonAsync<JsonElement>($"/api/admin/apps/{app.AppId}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Contains("Send null or leave the field out to allow every model", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("gpt-4o-mini", stored.GetProperty("limits").GetProperty("allowedModels")[0].GetString());
    }

    [Fact]
    public async Task NullChatMessageIsRejected()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "null-message")));
        using var content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"},null]}""", Encoding.UTF8, "application/json");

        using var response = await user.PostAsync("/v1/chat/completions", content);
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
    }

    [Fact]
    public async Task NewAppsStartWithConfiguredLimits()
    {
        var configured = new Uri(await system.StartServiceAsync("Ingress2", new Dictionary<string, string?>
        {
            ["NewAppLimits:TokensPerDay"] = "5000",
            ["NewAppLimits:AllowedModels:0"] = "gpt-4o-mini",
        }));
        try
        {
            using var configuredAdmin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken), configured);
            using var created = await configuredAdmin.PostAsync("/api/admin/apps",
                new StringContent("""{"name":"Starts limited"}""", Encoding.UTF8, "application/json"));
            string appId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("appId").GetString()!;
            var plain = await system.CreateAppAsync();
            using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
            var limits = (await admin.GetFromJsonAsync<JsonElement>($"/api/admin/apps/{appId}")).GetProperty("limits");
            var plainLimits = (await admin.GetFromJsonAsync<JsonElement>($"/api/admin/apps/{plain.AppId}")).GetProperty("limits");

            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            Assert.Equal(5000, limits.GetProperty("tokensPerDay").GetInt64());
            Assert.Equal("gpt-4o-mini", limits.GetProperty("allowedModels")[0].GetString());
            Assert.Equal(1, limits.GetProperty("allowedModels").GetArrayLength());
            Assert.Equal(JsonValueKind.Null, plainLimits.GetProperty("tokensPerDay").ValueKind);
        }
        finally
        {
            await system.StopServiceAsync("Ingress2");
        }
    }

    [Fact]
    public async Task InvalidNewAppLimitsStopTheStart()
    {
        string message = await StartFailureAsync<OptionsValidationException>("NewAppLimits:TokensPerDay", "0");

        Assert.Contains("NewAppLimits is invalid: tokensPerDay must be a whole number from 1 to 9007199254740991, or null for no limit.", message,
            StringComparison.Ordinal);
    }

    // A misspelt name, a word for a number, or a single value where a list belongs (which would otherwise leave new
    // apps free to use every model) stops the start with a message that names the setting.
    [Theory]
    [InlineData("NewAppLimits:TokensPerDays", "2000", "TokensPerDays")]
    [InlineData("NewAppLimits:TokensPerDay", "many", "'NewAppLimits:TokensPerDay'")]
    [InlineData("NewAppLimits:AllowedModels", "gpt-4o-mini", "'NewAppLimits:AllowedModels'")]
    public async Task UnreadableNewAppLimitStopsTheStart(string key, string value, string named)
    {
        string message = await StartFailureAsync<InvalidOperationException>(key, value);

        Assert.Contains(named, message, StringComparison.Ordinal);
    }

    /// <summary>Starts a second Ingress with one extra setting, and returns the message of the exception that stops it.</summary>
    private async Task<string> StartFailureAsync<TException>(string key, string value)
        where TException : Exception
    {
        try
        {
            var error = await Assert.ThrowsAsync<TException>(() => system.StartServiceAsync("Ingress2",
                new Dictionary<string, string?> { [key] = value }));
            return error.Message;
        }
        finally
        {
            await system.StopServiceAsync("Ingress2");
        }
    }

    private static Task<HttpResponseMessage> PutJsonAsync(HttpClient client, string path, string json) =>
        client.PutAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
}
