using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using MongoDB.Bson;

namespace AddOnEvents.Tests;

/// <summary>The key-and-prompt pipeline end to end: three services, RabbitMQ, jongodb and a fake upstream.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class PipelineTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task WorkQueuesAreQuorumByDefault()
    {
        var types = await system.Broker.QueueTypesAsync();

        Assert.Equal("quorum", types["prompt-requested"]);
        Assert.Equal("quorum", types["key-registered"]);
    }

    [Fact]
    public async Task PromptAnsweredWithAppsOwnKey()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-pipeline-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, "user-1");
        await using var client = await system.ConnectAsync(token);
        string prompt = "What is the capital of France? " + Guid.NewGuid().ToString("N");

        var requestId = await system.PostPromptAsync(token, prompt);
        var result = await client.WaitForResultAsync(requestId, Patience);

        var upstreamRequest = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        Assert.Equal(key, upstreamRequest.BearerKey);
        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal("Echo: " + prompt, result.Text);
        Assert.Equal("stop", result.Json.GetProperty("finishReason").GetString());
        var usage = result.Json.GetProperty("usage");
        Assert.Equal(7, usage.GetProperty("promptTokens").GetInt32());
        Assert.Equal(8, usage.GetProperty("completionTokens").GetInt32());
        Assert.Equal(15, usage.GetProperty("totalTokens").GetInt32());
    }

    [Fact]
    public async Task PromptSentOverHubIsAnswered()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-hub-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-user"));

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "Hello over the hub" }).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal("Echo: Hello over the hub", result.Text);
    }

    [Fact]
    public async Task HubRejectionComesBackAsData()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-hub-reject-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-reject"));

        var empty = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", new { prompt = "" }).WaitAsync(Patience);
        var missing = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", (object?)null).WaitAsync(Patience);
        var thrown = await Record.ExceptionAsync(() => client.Connection.InvokeAsync<Guid>("SendPrompt", (object?)null).WaitAsync(Patience));
        var accepted = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", new { prompt = "Hello as data" }).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(accepted.GetProperty("requestId").GetGuid(), Patience);

        Assert.Equal("invalid_request", empty.GetProperty("code").GetString());
        Assert.Equal(JsonValueKind.Null, empty.GetProperty("requestId").ValueKind);
        Assert.Equal("invalid_request", missing.GetProperty("code").GetString());
        Assert.StartsWith("invalid_request: ", Assert.IsType<HubException>(thrown).Message.Split("HubException: ").Last(), StringComparison.Ordinal);
        Assert.Equal("Echo: Hello as data", result.Text);
    }

    [Fact]
    public async Task AppWithoutKeyGetsNoKeyConfigured()
    {
        // The add-on can be switched on only with an active key, so the app loses its key after activation.
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-gone-" + Guid.NewGuid().ToString("N"));
        using (var developer = system.CreateClient(SystemFixture.Basic(app)))
        using (var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key"))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        string token = await system.IssueUserTokenAsync(app, "user-2");
        await using var client = await system.ConnectAsync(token);
        string prompt = "No key here " + Guid.NewGuid().ToString("N");

        var requestId = await system.PostPromptAsync(token, prompt);
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("no_key_configured", result.Code);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task UpstreamRejectingKeyGivesUpstreamAuthFailed()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-revoked-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, "user-3");
        await using var client = await system.ConnectAsync(token);
        system.Upstream.RejectKey(key);

        var requestId = await system.PostPromptAsync(token, "Will this work?");
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("upstream_auth_failed", result.Code);
        Assert.DoesNotContain("Incorrect API key", result.Message, StringComparison.Ordinal);
        var status = await system.WaitForKeyStateAsync(app, "invalid");
        Assert.Equal("upstream_auth_failed", status.GetProperty("reasonCode").GetString());
    }

    [Fact]
    public async Task UpstreamForbiddingRequestKeepsKeyActive()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-forbidden-model-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "user-403");
        await using var client = await system.ConnectAsync(token);
        string marker = "forbidden model " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == marker ? ScriptedResponse.Error(403, "model_not_available") : null;

        var forbidden = await client.WaitForResultAsync(await system.PostPromptAsync(token, marker), Patience);
        var next = await client.WaitForResultAsync(await system.PostPromptAsync(token, "and now a normal one"), Patience);
        system.Upstream.Responder = null;
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        var status = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/openai-key");

        Assert.Equal("upstream_forbidden", forbidden.Code);
        Assert.Equal("PromptCompleted", next.Kind);
        Assert.Equal("active", status.GetProperty("state").GetString());
    }

    [Fact]
    public async Task KeyRejectedAtRegistrationIsInvalid()
    {
        var app = await system.CreateAppAsync();

        using var response = await system.PutKeyAsync(app, "sk-unknown-" + Guid.NewGuid().ToString("N"));
        var status = await system.WaitForKeyStateAsync(app, "invalid");

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("upstream_auth_failed", status.GetProperty("reasonCode").GetString());
    }

    [Fact]
    public async Task KeyStatusShowsMaskedHintOnly()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-hint-" + Guid.NewGuid().ToString("N");

        await system.RegisterActiveKeyAsync(app, key);
        var status = await system.WaitForKeyStateAsync(app, "active");

        Assert.Equal("sk-..." + key[^4..], status.GetProperty("hint").GetString());
        Assert.DoesNotContain(key, status.GetRawText(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReplacedKeyServesNextPrompts()
    {
        var app = await system.CreateAppAsync();
        string first = "sk-first-" + Guid.NewGuid().ToString("N");
        string second = "sk-second-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, first);
        string token = await system.IssueUserTokenAsync(app, "user-4");
        await using var client = await system.ConnectAsync(token);

        await system.RegisterActiveKeyAsync(app, second);
        var status = await system.WaitForKeyStateAsync(app, "active");
        var requestId = await system.PostPromptAsync(token, "after replace " + requestTag);
        await client.WaitForResultAsync(requestId, Patience);

        var upstreamRequest = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == "after replace " + requestTag, Patience);
        Assert.Equal(second, upstreamRequest.BearerKey);
        Assert.Equal(2, status.GetProperty("version").GetInt64());
    }

    [Fact]
    public async Task DeletedKeyStopsPrompts()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-deleted-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "user-5");
        await using var client = await system.ConnectAsync(token);
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key");
        using var status = await developer.GetAsync($"/api/apps/{app.AppId}/openai-key");
        var requestId = await system.PostPromptAsync(token, "after delete " + requestTag);
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, status.StatusCode);
        Assert.Equal("no_key_configured", result.Code);
        Assert.Empty(await system.ReadCollectionsAsync("keys").ContinueWith(t => t.Result.Where(d => d["_id"] == app.AppId).ToList()));
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == "after delete " + requestTag);
    }

    [Fact]
    public async Task StoredDocumentHoldsNoPlaintextKey()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-stored-" + Guid.NewGuid().ToString("N");

        await system.RegisterActiveKeyAsync(app, key);
        var documents = await system.ReadCollectionsAsync("keys", "keyVersions", "apps");

        var document = Assert.Single(documents, d => d["_id"] == app.AppId && d.Contains("material"));
        Assert.DoesNotContain(key, document.ToJson(), StringComparison.Ordinal);
        Assert.Equal("mk1", document["material"]["masterKeyId"].AsString);
        Assert.StartsWith("hmac-sha256:", document["material"]["fingerprint"].AsString, StringComparison.Ordinal);
        Assert.Equal(key.Length + 16, document["material"]["ciphertext"].AsByteArray.Length);
    }

    private readonly string requestTag = Guid.NewGuid().ToString("N");
}
