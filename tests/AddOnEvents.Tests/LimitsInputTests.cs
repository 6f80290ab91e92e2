using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;

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

    private static Task<HttpResponseMessage> PutJsonAsync(HttpClient client, string path, string json) =>
        client.PutAsync(path, new StringContent(json, Encoding.UTF8, "application/json"));
}
