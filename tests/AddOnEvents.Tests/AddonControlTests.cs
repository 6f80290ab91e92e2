using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Common.Storage;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Ingress.Webhooks;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Activation, per-user switches, allowances with their threshold event and webhook, and preset actions.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class AddonControlTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task ActivationNeedsActiveKey()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var response = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/addon", new { active = true });

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("key_not_active", await CodeOf(response));
    }

    [Fact]
    public async Task InactiveAddonRejectsWithoutUpstreamCall()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-inactive-" + Guid.NewGuid().ToString("N"));
        await system.SetAddonActiveAsync(app, false);
        string marker = "while off " + Guid.NewGuid().ToString("N");
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "u")));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = marker });

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("addon_inactive", await CodeOf(response));
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
    }

    [Fact]
    public async Task DeactivationStopsAcceptedPromptBeforeUpstream()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-deactivate-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "u");
        await using var client = await system.ConnectAsync(token);
        string marker = "accepted then off " + Guid.NewGuid().ToString("N");
        await system.StopServiceAsync(nameof(PromptWorker));
        Guid requestId;
        try
        {
            requestId = await system.PostPromptAsync(token, marker);
            await system.SetAddonActiveAsync(app, false);
        }
        finally
        {
            await system.StartServiceAsync(nameof(PromptWorker));
        }

        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("addon_inactive", result.Code);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
    }

    [Fact]
    public async Task TokenOfRemovedAppIsNamed()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "u");
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using var removed = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");

        using var prompt = await system.CreateClient(SystemFixture.Bearer(token)).PostAsJsonAsync("/api/prompts", new { prompt = "anyone there?" });
        var error = await prompt.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, prompt.StatusCode);
        Assert.Equal("unauthorized", error.GetProperty("code").GetString());
        Assert.Equal(PromptLimiter.AppRemovedMessage, error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task QueuedPromptOfRemovedAppIsForbidden()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-removed-queue-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(SystemFixture.Bearer($"{app.AppId}.{app.Secret}"));
        string marker = "accepted then removed " + Guid.NewGuid().ToString("N");
        await system.StopServiceAsync(nameof(PromptWorker));
        Task<HttpResponseMessage> answer;
        try
        {
            answer = caller.PostAsJsonAsync("/v1/chat/completions", new { messages = new[] { new { role = "user", content = marker } } });

            // The endpoint returns only the result, so the broker's queue shows when the prompt was accepted.
            var deadline = DateTime.UtcNow + Patience;
            while ((await system.Broker.QueueDepthsAsync()).GetValueOrDefault("prompt-requested") == 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }

            using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
            using var removed = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");
            Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        }
        finally
        {
            await system.StartServiceAsync(nameof(PromptWorker));
        }

        using var response = await answer.WaitAsync(Patience);
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        // The worker deletes the stored failure after publishing it, so the response can arrive first.
        var left = await system.ReadCollectionsAsync(PromptResultStore.CollectionName);
        for (var deadline = DateTime.UtcNow + Patience; left.Any(d => d.ToJson().Contains(app.AppId, StringComparison.Ordinal)) && DateTime.UtcNow < deadline;)
        {
            await Task.Delay(200);
            left = await system.ReadCollectionsAsync(PromptResultStore.CollectionName);
        }

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("forbidden", error.GetProperty("code").GetString());
        Assert.Contains("removed", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
        Assert.DoesNotContain(left, d => d.ToJson().Contains(app.AppId, StringComparison.Ordinal));
    }

    [Fact]
    public async Task HostCanDisableOneUser()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-disable-" + Guid.NewGuid().ToString("N"));
        using var host = system.CreateClient(SystemFixture.Basic(app));
        using var byToken = system.CreateClient(SystemFixture.Bearer(await IssueAsync(host, app, new { userId = "t-user", addonDisabled = true })));
        using var viaApi = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "api-user")));
        using var other = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "other-user")));
        using (var set = await host.PutAsJsonAsync($"/api/apps/{app.AppId}/users/api-user/controls", new { addonDisabled = true }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var first = await byToken.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });
        using var second = await viaApi.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });
        using var third = await other.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });

        Assert.Equal("addon_disabled_for_user", await CodeOf(first));
        Assert.Equal("addon_disabled_for_user", await CodeOf(second));
        Assert.Equal(HttpStatusCode.Accepted, third.StatusCode);
    }

    [Fact]
    public async Task AppWithoutControlsFlagReadsControls()
    {
        var app = await system.CreateAppAsync();

        // An app stored by an earlier version has no flag and may have controls that were written without one.
        await system.Database.GetCollection<BsonDocument>("apps").UpdateOneAsync(Builders<BsonDocument>.Filter.Eq("_id", app.AppId),
            Builders<BsonDocument>.Update.Unset("hasUserControls"));
        await WriteControlsAsync(app, "legacy-user", new BsonDocument { ["addonDisabled"] = true, ["monthlyTokenAllowance"] = 10L });
        await system.RegisterActiveKeyAsync(app, "sk-legacy-controls-" + Guid.NewGuid().ToString("N"));
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "legacy-user")));

        using var prompt = await user.PostAsJsonAsync("/api/prompts", new { prompt = "am I switched off?" });
        var usage = await user.GetFromJsonAsync<JsonElement>("/api/me/usage");

        Assert.Equal(HttpStatusCode.Forbidden, prompt.StatusCode);
        Assert.Equal("addon_disabled_for_user", await CodeOf(prompt));
        Assert.Equal(10, usage.GetProperty("monthlyTokenAllowance").GetInt64());
    }

    [Fact]
    public async Task AppWithoutControlsSkipsTheirRead()
    {
        var app = await system.CreateAppAsync();
        var storedFlag = (await AppDocumentAsync(app)).GetValue("hasUserControls", BsonNull.Value);

        // Controls written past the API leave the app's flag false, so they take effect only if Ingress reads them.
        await WriteControlsAsync(app, "unread-user", new BsonDocument { ["addonDisabled"] = true, ["monthlyTokenAllowance"] = 10L });
        await system.RegisterActiveKeyAsync(app, "sk-unread-controls-" + Guid.NewGuid().ToString("N"));
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "unread-user")));

        using var prompt = await user.PostAsJsonAsync("/api/prompts", new { prompt = "are my controls read?" });
        var usage = await user.GetFromJsonAsync<JsonElement>("/api/me/usage");

        Assert.Equal(BsonBoolean.False, storedFlag);
        Assert.Equal(HttpStatusCode.Accepted, prompt.StatusCode);
        Assert.Equal(JsonValueKind.Null, usage.GetProperty("monthlyTokenAllowance").ValueKind);
    }

    [Fact]
    public async Task FreeformOffStillAllowsPresetActions()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-freeform-" + Guid.NewGuid().ToString("N"));
        using var host = system.CreateClient(SystemFixture.Basic(app));
        string token = await IssueAsync(host, app, new { userId = "preset-only", freeformDisabled = true });
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        string text = "Their is to many mistake in this sentense " + Guid.NewGuid().ToString("N");

        using var freeform = await user.PostAsJsonAsync("/api/prompts", new { prompt = "anything" });
        using var action = await user.PostAsJsonAsync("/api/prompts", new { action = "fix_grammar", text });
        var requestId = (await action.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetGuid();
        await client.WaitForResultAsync(requestId, Patience);
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == text, Patience);

        Assert.Equal(HttpStatusCode.Forbidden, freeform.StatusCode);
        Assert.Equal("freeform_disabled", await CodeOf(freeform));
        Assert.Equal(HttpStatusCode.Accepted, action.StatusCode);
        Assert.Equal("system", upstream.Messages[0].Role);
        Assert.Contains("grammar", upstream.Messages[0].Content, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("shorten", null, null, "Shorten")]
    [InlineData("expand", null, null, "Expand")]
    [InlineData("change_tone", "formal", null, "formal tone")]
    [InlineData("translate", null, "German", "into German")]
    public async Task PresetActionUsesServerInstructions(string action, string? tone, string? language, string expected)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-preset-" + Guid.NewGuid().ToString("N"));
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "writer")));
        string text = "Selected text " + Guid.NewGuid().ToString("N");

        using var response = await user.PostAsJsonAsync("/api/prompts", new { action, text, tone, language });
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == text, Patience);

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(2, upstream.Messages.Count);
        Assert.Equal("system", upstream.Messages[0].Role);
        Assert.Contains(expected, upstream.Messages[0].Content, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("summon", null, null)]
    [InlineData("change_tone", "sarcastic", null)]
    [InlineData("translate", null, "<script>")]
    public async Task InvalidPresetIsRejected(string action, string? tone, string? language)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-badpreset-" + Guid.NewGuid().ToString("N"));
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "writer")));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { action, text = "some text", tone, language });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", await CodeOf(response));
    }

    [Fact]
    public async Task ThresholdEventAndSignedWebhookThenAllowanceRunsOut()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-allowance-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var webhook = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/webhook", new { url = receiver.Url });
        string secret = (await webhook.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("signingSecret").GetString()!;
        string token = await IssueAsync(developer, app, new { userId = "host-user-42", monthlyTokenAllowance = 10, allowanceThresholdPercent = 50 });
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        var first = await system.PostPromptAsync(token, "one two three four five");
        await client.WaitForResultAsync(first, Patience);
        var delivery = await receiver.NextAsync(Patience);
        var usage = await user.GetFromJsonAsync<JsonElement>("/api/me/usage");
        using var exhausted = await user.PostAsJsonAsync("/api/prompts", new { prompt = "one more" });

        var thresholdEvent = Assert.Single(client.AllowanceEvents);
        Assert.Equal(50, thresholdEvent.GetProperty("thresholdPercent").GetInt32());
        Assert.Equal("host-user-42", delivery.Body.GetProperty("userId").GetString());
        Assert.Equal("allowance.threshold_crossed", delivery.Body.GetProperty("type").GetString());
        long timestamp = long.Parse(delivery.Signature.Split(',')[0][2..], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(WebhookSender.Sign(secret, timestamp, delivery.RawBody), delivery.Signature);
        Assert.Equal(10, usage.GetProperty("monthlyTokenAllowance").GetInt64());
        Assert.Equal(0, usage.GetProperty("remainingTokens").GetInt64());
        Assert.Equal(HttpStatusCode.TooManyRequests, exhausted.StatusCode);
        Assert.Equal("quota_exceeded", await CodeOf(exhausted));
    }

    [Fact]
    public async Task WebhookSecretStoredOnlyEncrypted()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-sealed-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        string secret = (await SaveWebhookAsync(developer, app, new { url = receiver.Url }))!;
        string stored = (await AppDocumentAsync(app)).ToJson();
        await CrossThresholdAsync(developer, app, "host-user-sealed");
        var delivery = await receiver.NextAsync(Patience);

        Assert.StartsWith("whsec_", secret, StringComparison.Ordinal);
        Assert.Contains(app.AppId, stored, StringComparison.Ordinal);
        for (int start = "whsec_".Length; start + 8 <= secret.Length; start++)
        {
            Assert.DoesNotContain(secret.Substring(start, 8), stored, StringComparison.Ordinal);
        }

        Assert.Equal(SignatureOf(secret, delivery), delivery.Signature);
    }

    [Fact]
    public async Task LegacyPlaintextSecretSignsThenIsEncrypted()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var app = await system.CreateAppAsync();
        string legacy = "whsec_legacy" + Guid.NewGuid().ToString("N");
        await WriteAppFieldsAsync(app, new BsonDocument { ["webhookUrl"] = receiver.Url, ["webhookSecret"] = legacy });
        await system.RegisterActiveKeyAsync(app, "sk-webhook-legacy-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        await CrossThresholdAsync(developer, app, "host-user-legacy");
        var delivery = await receiver.NextAsync(Patience);
        var afterDelivery = await AppDocumentAsync(app);
        string? saved = await SaveWebhookAsync(developer, app, new { url = receiver.Url });
        var afterSave = await AppDocumentAsync(app);

        Assert.Equal(SignatureOf(legacy, delivery), delivery.Signature);
        Assert.False(afterDelivery.Contains("webhookSecret"), "The plaintext secret is still stored after its first use.");
        Assert.True(afterDelivery.Contains("webhookSecretSealed"), "The secret was not stored encrypted after its first use.");
        Assert.Equal(legacy, saved);
        Assert.False(afterSave.Contains("webhookSecret"), "The plaintext secret is stored again after a save.");
        Assert.True(afterSave.Contains("webhookSecretSealed"), "The secret is not stored encrypted after a save.");
        Assert.DoesNotContain(legacy, afterSave.ToJson(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task LegacyPlaintextSecretKeptAndEncryptedOnSave()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string url = $"http://127.0.0.1:9/hooks/{app.AppId}";
        string legacy = "whsec_legacy" + Guid.NewGuid().ToString("N");
        await WriteAppFieldsAsync(app, new BsonDocument { ["webhookUrl"] = url, ["webhookSecret"] = legacy });

        string? saved = await SaveWebhookAsync(developer, app, new { url = url + "/moved" });
        var afterSave = await AppDocumentAsync(app);

        Assert.Equal(legacy, saved);
        Assert.False(afterSave.Contains("webhookSecret"), "The plaintext secret is still stored after a save.");
        Assert.True(afterSave.Contains("webhookSecretSealed"), "The secret is not stored encrypted after a save.");
        Assert.DoesNotContain(legacy, afterSave.ToJson(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task SecretCopiedFromOtherAppSkippedThenReplaced()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        var app = await system.CreateAppAsync();
        var other = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-copied-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var otherDeveloper = system.CreateClient(SystemFixture.Basic(other));
        string? original = await SaveWebhookAsync(developer, app, new { url = receiver.Url });
        string? otherSecret = await SaveWebhookAsync(otherDeveloper, other, new { url = receiver.Url });
        var copied = (await AppDocumentAsync(other))["webhookSecretSealed"];
        await WriteAppFieldsAsync(app, new BsonDocument { ["webhookSecretSealed"] = copied });

        await CrossThresholdAsync(developer, app, "host-user-copied");
        await SystemFixture.WaitUntilAsync(() => system.Logs.Entries.Any(e => e.Contains("[1105]", StringComparison.Ordinal)
            && e.Contains(app.AppId, StringComparison.Ordinal)));
        bool skipped = await receiver.NoneWithinAsync(TimeSpan.FromSeconds(2));
        string? replaced = await SaveWebhookAsync(developer, app, new { url = receiver.Url });
        await CrossThresholdAsync(developer, app, "host-user-copied-2");
        var delivery = await receiver.NextAsync(Patience);

        Assert.True(skipped, "A webhook was sent although the stored secret belongs to another app.");
        Assert.NotEqual(original, replaced);
        Assert.NotEqual(otherSecret, replaced);
        Assert.Equal(SignatureOf(replaced!, delivery), delivery.Signature);
    }

    [Theory]
    [InlineData("erase the user")]
    [InlineData("remove the webhook")]
    public async Task RetriesStopWhenTheHostNoLongerWantsThem(string change)
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Failing = true;
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-withdrawn-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        await SaveWebhookAsync(developer, app, new { url = receiver.Url });

        await CrossThresholdAsync(developer, app, "leaving@example.com");
        await SystemFixture.WaitUntilAsync(() => receiver.Attempts >= 1);
        using (var response = change == "erase the user"
            ? await developer.DeleteAsync($"/api/apps/{app.AppId}/users/leaving%40example.com")
            : await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/webhook", new { url = (string?)null }))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        // Retries come 1 s and 5 s after the first attempt; one may already be under way.
        int attemptsAtChange = receiver.Attempts;
        await Task.Delay(TimeSpan.FromSeconds(7));

        Assert.InRange(receiver.Attempts, attemptsAtChange, attemptsAtChange + 1);

        // Webhook URLs often carry a secret in their path, so no log line may quote one.
        Assert.DoesNotContain(system.Logs.Entries, line => line.Contains(receiver.Url, StringComparison.Ordinal));
    }

    [Fact]
    public async Task PendingRetryGoesToChangedUrl()
    {
        await using var before = await WebhookReceiver.StartAsync();
        await using var after = await WebhookReceiver.StartAsync();
        before.Failing = true;
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-moved-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        await SaveWebhookAsync(developer, app, new { url = before.Url });

        await CrossThresholdAsync(developer, app, "moving@example.com");
        await SystemFixture.WaitUntilAsync(() => before.Attempts >= 1);
        string secret = (await SaveWebhookAsync(developer, app, new { url = after.Url }))!;
        var delivery = await after.NextAsync(Patience);

        Assert.Equal("allowance.threshold_crossed", delivery.Body.GetProperty("type").GetString());
        Assert.Equal("moving@example.com", delivery.Body.GetProperty("userId").GetString());
        Assert.Equal(SignatureOf(secret, delivery), delivery.Signature);
    }

    [Fact]
    public async Task WebhookOutlivesIngressThatAcceptedIt()
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Failing = true;
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-outbox-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string secret = (await SaveWebhookAsync(developer, app, new { url = receiver.Url }))!;
        string token = await IssueAsync(developer, app, new { userId = "host-user-outbox", monthlyTokenAllowance = 10, allowanceThresholdPercent = 50 });

        // The threshold event goes only to the instance that routed the prompt, so this one accepts the webhook.
        var accepting = new Uri(await system.StartServiceAsync("Ingress5"));
        try
        {
            await using var client = await AddOnClient.ConnectAsync(accepting, token, system.Http);
            var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "one two three four five", stream = false })
                .WaitAsync(Patience);
            await client.WaitForResultAsync(requestId, Patience);
            await SystemFixture.WaitUntilAsync(() => receiver.Attempts >= 1);
        }
        finally
        {
            await system.StopServiceAsync("Ingress5");
        }

        receiver.Failing = false;
        var delivery = await receiver.NextAsync(Patience);

        Assert.Equal("host-user-outbox", delivery.Body.GetProperty("userId").GetString());
        Assert.Equal("allowance.threshold_crossed", delivery.Body.GetProperty("type").GetString());
        Assert.Equal(SignatureOf(secret, delivery), delivery.Signature);
    }

    [Theory]
    [InlineData("erase the user")]
    [InlineData("remove the app")]
    public async Task PendingWebhookDeletedWithUserOrApp(string change)
    {
        await using var receiver = await WebhookReceiver.StartAsync();
        receiver.Failing = true;
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-webhook-pending-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        await SaveWebhookAsync(developer, app, new { url = receiver.Url });

        await CrossThresholdAsync(developer, app, "pending@example.com");
        await SystemFixture.WaitUntilAsync(() => receiver.Attempts >= 1);
        var pending = await OutboxEntriesAsync(app);
        var userData = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/pending%40example.com");
        using var response = change == "erase the user"
            ? await developer.DeleteAsync($"/api/apps/{app.AppId}/users/pending%40example.com")
            : await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");
        var remaining = await OutboxEntriesAsync(app);

        var entry = Assert.Single(pending);
        Assert.DoesNotContain("pending@example.com", entry.ToJson(), StringComparison.Ordinal);
        var listed = Assert.Single(userData.GetProperty("webhookDeliveries").EnumerateArray());
        Assert.Equal(entry["_id"].AsGuid, listed.GetProperty("eventId").GetGuid());
        Assert.True(response.IsSuccessStatusCode, $"The {change} request failed with {response.StatusCode}.");
        if (change == "erase the user")
        {
            var deleted = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted");
            Assert.Equal(1, deleted.GetProperty("webhookDeliveries").GetInt64());
        }

        Assert.Empty(remaining);
    }

    /// <summary>Reads the app's pending webhook deliveries straight from the database.</summary>
    private Task<List<BsonDocument>> OutboxEntriesAsync(TestApp app) =>
        system.Database.GetCollection<BsonDocument>("webhookDeliveries").Find(Builders<BsonDocument>.Filter.Eq("appId", app.AppId)).ToListAsync();

    private static async Task<string?> SaveWebhookAsync(HttpClient developer, TestApp app, object body)
    {
        using var response = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/webhook", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("signingSecret").GetString();
    }

    /// <summary>Makes a new end user use half their allowance, which sends the threshold webhook if the app has one.</summary>
    private async Task CrossThresholdAsync(HttpClient developer, TestApp app, string userId)
    {
        string token = await IssueAsync(developer, app, new { userId, monthlyTokenAllowance = 10, allowanceThresholdPercent = 50 });
        await using var client = await system.ConnectAsync(token);
        var requestId = await system.PostPromptAsync(token, "one two three four five");
        await client.WaitForResultAsync(requestId, Patience);
    }

    private static string SignatureOf(string secret, (string Signature, string RawBody, JsonElement Body) delivery)
    {
        long timestamp = long.Parse(delivery.Signature.Split(',')[0][2..], System.Globalization.CultureInfo.InvariantCulture);
        return WebhookSender.Sign(secret, timestamp, delivery.RawBody);
    }

    private Task<BsonDocument> AppDocumentAsync(TestApp app) =>
        system.Database.GetCollection<BsonDocument>("apps").Find(Builders<BsonDocument>.Filter.Eq("_id", app.AppId)).SingleAsync();

    /// <summary>Writes fields into the app's stored document directly, as an older version or an attacker with database access would.</summary>
    private Task WriteAppFieldsAsync(TestApp app, BsonDocument fields) =>
        system.Database.GetCollection<BsonDocument>("apps").UpdateOneAsync(Builders<BsonDocument>.Filter.Eq("_id", app.AppId),
            new BsonDocument("$set", fields));

    /// <summary>Stores a user's controls in the database directly, leaving the app document as it is.</summary>
    private Task WriteControlsAsync(TestApp app, string userId, BsonDocument controls)
    {
        string pseudonym = system.ServicesOf(nameof(Ingress)).GetRequiredService<UserTokens>().Pseudonym(app.AppId, userId);
        controls["_id"] = $"{app.AppId}|{pseudonym}";
        controls["updatedAt"] = DateTime.UtcNow;
        return system.Database.GetCollection<BsonDocument>("userControls").InsertOneAsync(controls);
    }

    [Fact]
    public async Task UserErasureRemovesOnlyThatUser()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-erasure-" + Guid.NewGuid().ToString("N"));
        var other = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var otherDeveloper = system.CreateClient(SystemFixture.Basic(other));
        using (var set = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/users/leaving%20user/controls", new { freeformDisabled = false }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        foreach (string userId in new[] { "leaving user", "staying user" })
        {
            // A per-minute limit makes the prompt leave a rate counter named by the user's pseudonym.
            string token = await IssueAsync(developer, app, new { userId, requestsPerMinute = 100 });
            await using var client = await system.ConnectAsync(token);
            await client.WaitForResultAsync(await system.PostPromptAsync(token, "remember me " + userId), Patience);
        }

        var before = await UserDataWithUsageAsync(developer, app, "leaving user");
        long rateCountersBefore = await CountRateCountersAsync(app, "leaving user");
        using var foreign = await otherDeveloper.GetAsync($"/api/apps/{app.AppId}/users/leaving%20user");
        using var foreignErase = await otherDeveloper.DeleteAsync($"/api/apps/{app.AppId}/users/leaving%20user");
        using var invalid = await developer.DeleteAsync($"/api/apps/{app.AppId}/users/%40leading-at");
        using var erase = await developer.DeleteAsync($"/api/apps/{app.AppId}/users/leaving%20user");
        var deleted = (await erase.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("deleted");
        var after = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/leaving%20user");
        var staying = await UserDataWithUsageAsync(developer, app, "staying user");
        long rateCountersAfter = await CountRateCountersAsync(app, "leaving user");
        long stayingRateCounters = await CountRateCountersAsync(app, "staying user");

        Assert.Equal(JsonValueKind.Object, before.GetProperty("controls").ValueKind);
        Assert.Equal(1, rateCountersBefore);
        Assert.Single(before.GetProperty("rateCounters").EnumerateArray());
        Assert.Equal("Echo: remember me leaving user", Assert.Single(before.GetProperty("results").EnumerateArray()).GetProperty("text").GetString());
        Assert.Equal(HttpStatusCode.Forbidden, foreign.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, foreignErase.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        Assert.Equal(HttpStatusCode.OK, erase.StatusCode);
        Assert.True(deleted.GetProperty("controls").GetBoolean());
        Assert.Equal(1, deleted.GetProperty("usageCounters").GetInt64());
        Assert.Equal(1, deleted.GetProperty("results").GetInt64());
        Assert.Equal(1, deleted.GetProperty("rateCounters").GetInt64());
        Assert.Equal(0, rateCountersAfter);
        Assert.Equal(1, stayingRateCounters);
        Assert.Empty(after.GetProperty("rateCounters").EnumerateArray());
        Assert.Equal(JsonValueKind.Null, after.GetProperty("controls").ValueKind);
        Assert.Empty(after.GetProperty("usage").EnumerateArray());
        Assert.Empty(after.GetProperty("results").EnumerateArray());
        Assert.Single(staying.GetProperty("results").EnumerateArray());
        Assert.Single(staying.GetProperty("usage").EnumerateArray());
    }

    [Fact]
    public async Task UserIdWithSlashReachesThatUser()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-slash-" + Guid.NewGuid().ToString("N"));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        using var set = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/users/team%2Falice/controls", new { addonDisabled = true });
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "team/alice")));

        using var prompt = await user.PostAsJsonAsync("/api/prompts", new { prompt = "am I switched off?" });
        var data = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/team%2Falice");
        var escapedSegment = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/%75sers/team%2Falice");

        Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, prompt.StatusCode);
        Assert.Equal("addon_disabled_for_user", await CodeOf(prompt));
        Assert.Equal("team/alice", data.GetProperty("userId").GetString());
        Assert.True(data.GetProperty("controls").GetProperty("addonDisabled").GetBoolean());
        Assert.Equal("team/alice", escapedSegment.GetProperty("userId").GetString());
    }

    /// <summary>Reads a user's stored data once the usage of their answer is counted, which may follow the answer by a moment.</summary>
    private static async Task<JsonElement> UserDataWithUsageAsync(HttpClient developer, TestApp app, string userId)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            var data = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/{Uri.EscapeDataString(userId)}");
            if (data.GetProperty("usage").GetArrayLength() > 0 || DateTime.UtcNow > deadline)
            {
                return data;
            }

            await Task.Delay(100);
        }
    }

    /// <summary>Counts the per-minute rate counter rows of one end user, read straight from the database.</summary>
    private async Task<long> CountRateCountersAsync(TestApp app, string userId)
    {
        string pseudonym = system.ServicesOf(nameof(Ingress)).GetRequiredService<UserTokens>().Pseudonym(app.AppId, userId);
        var counters = await system.ReadCollectionsAsync("rateCounters").WaitAsync(Patience);
        return counters.Count(c => c["_id"].AsString.StartsWith($"user|{app.AppId}|{pseudonym}|", StringComparison.Ordinal));
    }

    private static async Task<string> IssueAsync(HttpClient host, TestApp app, object body)
    {
        using var response = await host.PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    private static async Task<string?> CodeOf(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString();

    /// <summary>A host backend on 127.0.0.1 that records the webhooks it receives.</summary>
    private sealed class WebhookReceiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly BlockingCollection<(string Signature, string RawBody)> _received = [];
        private int _attempts;

        private WebhookReceiver(WebApplication app)
        {
            _app = app;
        }

        public string Url { get; private set; } = "";

        /// <summary>When set, every delivery gets 503, so the sender keeps retrying.</summary>
        public bool Failing { get; set; }

        /// <summary>Deliveries that arrived, failed ones included.</summary>
        public int Attempts => Volatile.Read(ref _attempts);

        public static async Task<WebhookReceiver> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            builder.Logging.ClearProviders();
            var app = builder.Build();
            var receiver = new WebhookReceiver(app);
            app.MapPost("/hooks", async (HttpContext http) =>
            {
                string body = await new StreamReader(http.Request.Body).ReadToEndAsync();
                Interlocked.Increment(ref receiver._attempts);
                if (receiver.Failing)
                {
                    return Results.StatusCode(StatusCodes.Status503ServiceUnavailable);
                }

                receiver._received.Add((http.Request.Headers[WebhookSender.SignatureHeader].ToString(), body));
                return Results.Ok();
            });
            await app.StartAsync();
            receiver.Url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First() + "/hooks";
            return receiver;
        }

        public async Task<(string Signature, string RawBody, JsonElement Body)> NextAsync(TimeSpan timeout)
        {
            var taken = await Task.Run(() => _received.TryTake(out var item, timeout) ? item : default);
            return taken.RawBody is null
                ? throw new TimeoutException("No webhook arrived.")
                : (taken.Signature, taken.RawBody, JsonDocument.Parse(taken.RawBody).RootElement.Clone());
        }

        /// <summary>Tells whether no webhook arrives within <paramref name="wait"/>.</summary>
        public async Task<bool> NoneWithinAsync(TimeSpan wait) =>
            !await Task.Run(() => _received.TryTake(out _, wait));

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
            _received.Dispose();
        }
    }
}
