using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;

namespace AddOnEvents.Tests;

/// <summary>Rejected replacements, keys rejected at registration, and re-checks of unverified keys, end to end.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class KeyLifecycleTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task RejectedReplacementKeepsPreviousKey()
    {
        var app = await system.CreateAppAsync();
        string good = "sk-good-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, good);
        string token = await system.IssueUserTokenAsync(app, "replace-user");
        await using var client = await system.ConnectAsync(token);

        using (var mistyped = await system.PutKeyAsync(app, "sk-mistyped-" + Guid.NewGuid().ToString("N")))
        {
            Assert.Equal(HttpStatusCode.Accepted, mistyped.StatusCode);
        }

        var status = await system.WaitForKeyStateAsync(app, "invalid");
        string prompt = "after a rejected replacement " + Guid.NewGuid().ToString("N");
        var result = await client.WaitForResultAsync(await system.PostPromptAsync(token, prompt), Patience);
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);

        Assert.Equal(2, status.GetProperty("version").GetInt64());
        Assert.Equal("upstream_auth_failed", status.GetProperty("reasonCode").GetString());
        Assert.Equal(1, status.GetProperty("activeVersion").GetInt64());
        Assert.Equal("sk-..." + good[^4..], status.GetProperty("activeHint").GetString());
        Assert.NotEqual(status.GetProperty("hint").GetString(), status.GetProperty("activeHint").GetString());
        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal(good, upstreamRequest.BearerKey);
    }

    [Fact]
    public async Task RevokedPreviousKeyStopsServing()
    {
        var app = await system.CreateAppAsync();
        string good = "sk-good-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, good);
        string token = await system.IssueUserTokenAsync(app, "revoked-previous-user");
        await using var client = await system.ConnectAsync(token);
        using (var mistyped = await system.PutKeyAsync(app, "sk-mistyped-" + Guid.NewGuid().ToString("N")))
        {
            Assert.Equal(HttpStatusCode.Accepted, mistyped.StatusCode);
        }

        await system.WaitForKeyStateAsync(app, "invalid");

        // The developer revokes the previous key at OpenAI after the replacement was rejected.
        system.Upstream.RejectKey(good);
        string first = "with a revoked previous key " + Guid.NewGuid().ToString("N");
        var firstResult = await client.WaitForResultAsync(await system.PostPromptAsync(token, first), Patience);
        string second = "after the revoked key was dropped " + Guid.NewGuid().ToString("N");
        var secondResult = await client.WaitForResultAsync(await system.PostPromptAsync(token, second), Patience);
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        var status = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/openai-key");

        Assert.Equal("upstream_auth_failed", firstResult.Code);
        Assert.Equal("key_invalid", secondResult.Code);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == second);
        Assert.Equal(2, status.GetProperty("version").GetInt64());
        Assert.Equal("invalid", status.GetProperty("state").GetString());
        Assert.Equal(JsonValueKind.Null, status.GetProperty("activeVersion").ValueKind);
    }

    [Fact]
    public async Task RejectedKeyStaysUnusedWhileReplacementPending()
    {
        var app = await system.CreateAppAsync();
        string revoked = "sk-revoked-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, revoked);
        string token = await system.IssueUserTokenAsync(app, "pending-replacement-user");
        await using var client = await system.ConnectAsync(token);
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        // The developer revokes the key at OpenAI, and the next prompt meets the provider's 401.
        system.Upstream.RejectKey(revoked);
        string first = "with a revoked key " + Guid.NewGuid().ToString("N");
        var rejection = await client.WaitForResultAsync(await system.PostPromptAsync(token, first), Patience);
        int callsWithRevokedKey = CountChatCalls(revoked);

        // With KeyWorker stopped the replacement stays pending, as it does while the broker or KeyWorker restarts.
        string replacement = "sk-replacement-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(replacement);
        string second = "while the replacement is pending " + Guid.NewGuid().ToString("N");
        await system.StopServiceAsync(nameof(KeyWorker));
        JsonElement pending;
        AddOnResult duringCheck;
        try
        {
            using (var replaced = await system.PutKeyAsync(app, replacement))
            {
                Assert.Equal(HttpStatusCode.Accepted, replaced.StatusCode);
            }

            pending = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/openai-key");
            duringCheck = await client.WaitForResultAsync(await system.PostPromptAsync(token, second), Patience);
        }
        finally
        {
            await system.StartServiceAsync(nameof(KeyWorker));
        }

        var active = await system.WaitForKeyStateAsync(app, "active");
        string third = "after the replacement is active " + Guid.NewGuid().ToString("N");
        var answered = await client.WaitForResultAsync(await system.PostPromptAsync(token, third), Patience);
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == third, Patience);

        Assert.Equal("upstream_auth_failed", rejection.Code);
        Assert.Equal(1, callsWithRevokedKey);
        Assert.Equal("PromptFailed", duringCheck.Kind);
        Assert.Equal("key_invalid", duringCheck.Code);
        Assert.Contains("still being checked", duringCheck.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == second);
        Assert.Equal(callsWithRevokedKey, CountChatCalls(revoked));
        Assert.Equal("pending", pending.GetProperty("state").GetString());
        Assert.Equal(2, pending.GetProperty("version").GetInt64());
        Assert.Equal(JsonValueKind.Null, pending.GetProperty("activeVersion").ValueKind);
        Assert.Equal(JsonValueKind.Null, pending.GetProperty("activeHint").ValueKind);
        Assert.Equal(1, pending.GetProperty("rejectedVersion").GetInt64());
        Assert.Equal(2, active.GetProperty("activeVersion").GetInt64());
        Assert.Equal(JsonValueKind.Null, active.GetProperty("rejectedVersion").ValueKind);
        Assert.Equal("PromptCompleted", answered.Kind);
        Assert.Equal(replacement, upstreamRequest.BearerKey);
    }

    [Fact]
    public async Task DeleteAfterRejectedReplacementStopsPrompts()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-good-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "delete-user");
        await using var client = await system.ConnectAsync(token);
        using (var mistyped = await system.PutKeyAsync(app, "sk-mistyped-" + Guid.NewGuid().ToString("N")))
        {
            Assert.Equal(HttpStatusCode.Accepted, mistyped.StatusCode);
        }

        await system.WaitForKeyStateAsync(app, "invalid");
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key");
        var result = await client.WaitForResultAsync(await system.PostPromptAsync(token, "after delete"), Patience);

        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        Assert.Equal("no_key_configured", result.Code);
    }

    [Theory]
    [InlineData("key")]
    [InlineData("app")]
    public async Task DeleteDuringCheckStaysDeleted(string deleted)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-first-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        // The provider's check of the replacement runs while the key or the whole app is deleted.
        string replacement = "sk-replacement-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(replacement);
        system.Upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromSeconds(2), ScriptedResponse.Answer("")).ForModels());
        using (var replaced = await system.PutKeyAsync(app, replacement))
        {
            Assert.Equal(HttpStatusCode.Accepted, replaced.StatusCode);
        }

        var check = await system.Upstream.WaitForRequestAsync(r => r.Path == "/v1/models" && !r.Completion.IsCompleted, Patience);
        using var deletion = deleted == "key"
            ? await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key")
            : await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");
        await check.Completion.WaitAsync(Patience);
        string stored = $"Stored key of app {app.AppId} version 2 ";
        string skipped = $"Skipped key of app {app.AppId} version 2:";
        await SystemFixture.WaitUntilAsync(() => system.Logs.Entries.Any(e => e.Contains(stored, StringComparison.Ordinal)
            || e.Contains(skipped, StringComparison.Ordinal)));
        var keys = await system.ReadCollectionsAsync("keys");

        Assert.Equal(HttpStatusCode.NoContent, deletion.StatusCode);
        Assert.Contains(system.Logs.Entries, e => e.Contains(skipped, StringComparison.Ordinal));
        Assert.DoesNotContain(keys, k => k["_id"].AsString == app.AppId);
        if (deleted == "key")
        {
            using var status = await developer.GetAsync($"/api/apps/{app.AppId}/openai-key");
            Assert.Equal(HttpStatusCode.NotFound, status.StatusCode);
        }
    }

    [Fact]
    public async Task KeyRejectedAtRegistrationGivesKeyInvalid()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-first-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "rejected-user");
        await using var client = await system.ConnectAsync(token);
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        // Deleting leaves the add-on on, so the next key is the only one the app has.
        using (var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key"))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        using (var rejected = await system.PutKeyAsync(app, "sk-unknown-" + Guid.NewGuid().ToString("N")))
        {
            Assert.Equal(HttpStatusCode.Accepted, rejected.StatusCode);
        }

        var status = await system.WaitForKeyStateAsync(app, "invalid");
        var result = await client.WaitForResultAsync(await system.PostPromptAsync(token, "with a rejected key"), Patience);

        Assert.Equal(JsonValueKind.Null, status.GetProperty("activeVersion").ValueKind);
        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("key_invalid", result.Code);
    }

    [Fact]
    public async Task UnverifiedKeyServesAndTurnsActive()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-unverified-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);

        // The registration's check and the first re-check fail, so the key stays unverified for about 3 s.
        system.Upstream.Enqueue(ScriptedResponse.Error(503).ForModels());
        system.Upstream.Enqueue(ScriptedResponse.Error(503).ForModels());
        using (var registered = await system.PutKeyAsync(app, key))
        {
            Assert.Equal(HttpStatusCode.Accepted, registered.StatusCode);
        }

        var unverified = await system.WaitForKeyStateAsync(app, "unverified");
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var switchedOn = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/addon", new { active = true });
        string token = await system.IssueUserTokenAsync(app, "unverified-user");
        await using var client = await system.ConnectAsync(token);
        var result = await client.WaitForResultAsync(await system.PostPromptAsync(token, "with an unverified key"), Patience);
        var active = await system.WaitForKeyStateAsync(app, "active");

        Assert.Equal("upstream_unavailable", unverified.GetProperty("reasonCode").GetString());
        Assert.Equal(HttpStatusCode.OK, switchedOn.StatusCode);
        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal(JsonValueKind.Null, active.GetProperty("reasonCode").ValueKind);
    }

    [Fact]
    public async Task UnverifiedKeyRecheckedThenAbandoned()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-unreachable-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);

        // The registration's check and the fixture's three re-checks all meet an unavailable provider.
        for (int i = 0; i < 4; i++)
        {
            system.Upstream.Enqueue(ScriptedResponse.Error(503).ForModels());
        }

        using (var registered = await system.PutKeyAsync(app, key))
        {
            Assert.Equal(HttpStatusCode.Accepted, registered.StatusCode);
        }

        var abandoned = await WaitForReasonAsync(app, "key_check_abandoned");
        await Task.Delay(TimeSpan.FromSeconds(3));
        int checks = system.Upstream.Requests.Count(r => r.Path == FakeUpstream.ModelsPath && r.BearerKey == key);

        Assert.Equal("unverified", abandoned.GetProperty("state").GetString());
        Assert.Equal(4, checks);
    }

    private int CountChatCalls(string bearerKey) =>
        system.Upstream.Requests.Count(r => r.Path == FakeUpstream.ChatCompletionsPath && r.BearerKey == bearerKey);

    /// <summary>Polls the key status until its reason code is <paramref name="reasonCode"/>, and returns that status.</summary>
    private async Task<JsonElement> WaitForReasonAsync(TestApp app, string reasonCode)
    {
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        var deadline = DateTime.UtcNow + Patience;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            last = await developer.GetStringAsync($"/api/apps/{app.AppId}/openai-key");
            var body = JsonDocument.Parse(last).RootElement;
            if (body.GetProperty("reasonCode").GetString() == reasonCode)
            {
                return body.Clone();
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"The key of {app.AppId} did not reach reason '{reasonCode}' within {Patience}; last status: {last}");
    }
}
