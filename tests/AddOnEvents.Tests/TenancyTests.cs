using System.IdentityModel.Tokens.Jwt;
using System.Net;
using System.Net.Http.Json;
using System.Security.Claims;
using System.Text.Json;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.IdentityModel.Tokens;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Apps, credentials, end-user tokens, delivery to the right user, and limits across Ingress instances.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class TenancyTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task InterleavedTenantsNeverMix()
    {
        var appA = await system.CreateAppAsync("A");
        var appB = await system.CreateAppAsync("B");
        string keyA = "sk-tenant-a-" + Guid.NewGuid().ToString("N");
        string keyB = "sk-tenant-b-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(appA, keyA);
        await system.RegisterActiveKeyAsync(appB, keyB);
        var users = new List<(string Tag, string Key, AddOnClient Client)>();
        foreach (var (app, key) in new[] { (appA, keyA), (appB, keyB) })
        {
            for (int u = 0; u < 2; u++)
            {
                string tag = $"{app.AppId}-user{u}";
                users.Add((tag, key, await system.ConnectAsync(await system.IssueUserTokenAsync(app, tag))));
            }
        }

        var sent = new List<(int User, Guid RequestId, string Prompt)>();
        for (int round = 0; round < 60; round++)
        {
            for (int u = 0; u < users.Count; u++)
            {
                string prompt = $"{users[u].Tag} round {round} {Guid.NewGuid():N}";
                var requestId = await users[u].Client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt, stream = round % 2 == 0 })
                    .WaitAsync(Patience);
                sent.Add((u, requestId, prompt));
            }
        }

        foreach (var (user, requestId, prompt) in sent)
        {
            var result = await users[user].Client.WaitForResultAsync(requestId, Patience);
            Assert.Equal("Echo: " + prompt, result.Text);
        }

        var upstreamByPrompt = system.Upstream.Requests.Where(r => r.LastUserMessage is not null).ToLookup(r => r.LastUserMessage!);
        int mismatches = sent.Count(s => upstreamByPrompt[s.Prompt].Any(r => r.BearerKey != users[s.User].Key));
        Assert.Equal(0, mismatches);
        Assert.All(sent, s => Assert.Single(upstreamByPrompt[s.Prompt]));
        for (int u = 0; u < users.Count; u++)
        {
            var own = sent.Where(s => s.User == u).Select(s => s.RequestId).ToHashSet();
            Assert.Equal(own.Count, users[u].Client.Received.Count);
            Assert.All(users[u].Client.Received, r => Assert.Contains(r.RequestId, own));
            Assert.All(users[u].Client.Pieces, p => Assert.Contains(p.RequestId, own));
        }

        foreach (var user in users)
        {
            await user.Client.DisposeAsync();
        }
    }

    [Fact]
    public async Task UserOfAppBNamingAppAIsRejected()
    {
        var appA = await system.CreateAppAsync("A");
        var appB = await system.CreateAppAsync("B");
        await system.RegisterActiveKeyAsync(appA, "sk-named-a-" + Guid.NewGuid().ToString("N"));
        string tokenB = await system.IssueUserTokenAsync(appB, "b-user");
        using var userB = system.CreateClient(SystemFixture.Bearer(tokenB));
        string marker = "naming app A " + Guid.NewGuid().ToString("N");

        using var inBody = await userB.PostAsJsonAsync("/api/prompts", new { prompt = marker, appId = appA.AppId });
        using var inQuery = await userB.PostAsJsonAsync($"/api/prompts?appId={appA.AppId}", new { prompt = marker });
        using var userInQuery = await userB.PostAsJsonAsync("/api/prompts?userId=someone-else", new { prompt = marker });
        using var snakeUserInQuery = await userB.PostAsJsonAsync("/api/prompts?user_id=someone-else", new { prompt = marker });
        using var inHeader = new HttpRequestMessage(HttpMethod.Post, "/api/prompts") { Content = JsonContent.Create(new { prompt = marker }) };
        inHeader.Headers.Add("X-App-Id", appA.AppId);
        using var inHeaderResponse = await userB.SendAsync(inHeader);
        using var keyOfA = await userB.GetAsync($"/api/apps/{appA.AppId}/openai-key");
        using var tokenForA = await userB.PostAsJsonAsync($"/api/apps/{appA.AppId}/user-tokens", new { userId = "x" });
        await Task.Delay(500);

        Assert.Equal(HttpStatusCode.Forbidden, inBody.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, inQuery.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, userInQuery.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, snakeUserInQuery.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, inHeaderResponse.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, keyOfA.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, tokenForA.StatusCode);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
    }

    [Fact]
    public async Task ResultOfOtherUserIsNotFound()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-results-" + Guid.NewGuid().ToString("N"));
        string owner = await system.IssueUserTokenAsync(app, "owner");
        string stranger = await system.IssueUserTokenAsync(app, "stranger");
        await using var client = await system.ConnectAsync(owner);
        var requestId = await system.PostPromptAsync(owner, "whose answer");
        await client.WaitForResultAsync(requestId, Patience);
        using var ownerHttp = system.CreateClient(SystemFixture.Bearer(owner));
        using var strangerHttp = system.CreateClient(SystemFixture.Bearer(stranger));

        using var own = await ownerHttp.GetAsync($"/api/prompts/{requestId}");
        using var other = await strangerHttp.GetAsync($"/api/prompts/{requestId}");
        var body = await own.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal("completed", body.GetProperty("status").GetString());
        Assert.Equal("Echo: whose answer", body.GetProperty("text").GetString());
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
    }

    [Fact]
    public async Task DeveloperCannotReadOtherAppsUsage()
    {
        var appA = await system.CreateAppAsync("A");
        var appB = await system.CreateAppAsync("B");
        using var developerB = system.CreateClient(SystemFixture.Basic(appB));
        using var developerA = system.CreateClient(SystemFixture.Basic(appA));

        using var other = await developerB.GetAsync($"/api/apps/{appA.AppId}/usage");
        using var own = await developerA.GetAsync($"/api/apps/{appA.AppId}/usage");

        Assert.Equal(HttpStatusCode.Forbidden, other.StatusCode);
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
    }

    [Fact]
    public async Task ReconnectedClientGetsAnswerOnce()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-reconnect-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, "roaming-user");
        string prompt = "slow one " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(2), ScriptedResponse.Answer("worth the wait"))
            : null;
        await using var client = await system.ConnectAsync(token);
        string? firstConnection = client.Connection.ConnectionId;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await client.Connection.StopAsync().WaitAsync(Patience);
        await client.Connection.StartAsync().WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        await Task.Delay(1000);
        system.Upstream.Responder = null;

        Assert.NotEqual(firstConnection, client.Connection.ConnectionId);
        Assert.Equal("worth the wait", result.Text);
        Assert.Single(client.Received, r => r.RequestId == requestId);
    }

    [Fact]
    public async Task RemovedAppLeavesNothingBehind()
    {
        var app = await system.CreateAppAsync();
        var neighbour = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-removed-" + Guid.NewGuid().ToString("N"));
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using (var limits = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { requestsPerMinute = 1000 }))
        {
            Assert.True(limits.IsSuccessStatusCode);
        }

        string token = await system.IssueUserTokenAsync(app, "leaving-user");
        await using var client = await system.ConnectAsync(token);
        await client.WaitForResultAsync(await system.PostPromptAsync(token, "one last question"), Patience);
        using var host = system.CreateClient(SystemFixture.Basic(app));
        using (var controls = await host.PutAsJsonAsync($"/api/apps/{app.AppId}/users/leaving-user/controls", new { freeformDisabled = true }))
        {
            Assert.True(controls.IsSuccessStatusCode);
        }

        var countedBefore = await system.ReadCollectionsAsync("rateCounters");
        using var removed = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");
        using var again = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}");
        using var lookup = await admin.GetAsync($"/api/admin/apps/{app.AppId}");
        using var list = await admin.GetAsync("/api/admin/apps?limit=1000");
        var listed = (await list.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("apps").EnumerateArray()
            .Select(a => a.GetProperty("appId").GetString()).ToList();
        using var oldCredentials = await host.GetAsync($"/api/apps/{app.AppId}/openai-key");
        var leftovers = await system.ReadCollectionsAsync("apps", "keys", "usage", "promptResults", "rateCounters", "userControls");

        Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, lookup.StatusCode);
        Assert.DoesNotContain(app.AppId, listed);
        Assert.Contains(neighbour.AppId, listed);
        Assert.Equal(HttpStatusCode.Unauthorized, oldCredentials.StatusCode);
        Assert.Contains(countedBefore, d => d.ToJson().Contains(app.AppId, StringComparison.Ordinal));
        Assert.DoesNotContain(leftovers, d => d.ToJson().Contains(app.AppId, StringComparison.Ordinal));
    }

    [Fact]
    public async Task InFlightPromptOfRemovedAppEnds()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-inflight-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "last-user");
        await using var client = await system.ConnectAsync(token);
        string prompt = "answered after removal " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Slow(TimeSpan.FromSeconds(2), ScriptedResponse.Answer("late answer")) : null;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var removed = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}"))
        {
            Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        }

        var result = await client.WaitForResultAsync(requestId, Patience);
        await Task.Delay(1000);
        system.Upstream.Responder = null;
        var usage = await system.ReadCollectionsAsync("usage", "promptResults");

        Assert.Equal("late answer", result.Text);
        Assert.DoesNotContain(usage, d => d.ToJson().Contains(app.AppId, StringComparison.Ordinal));
    }

    [Fact]
    public async Task HubConnectionClosesWhenItsTokenExpires()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-expiry-" + Guid.NewGuid().ToString("N"));
        var tokens = system.ServicesOf(nameof(Ingress)).GetRequiredService<UserTokens>();
        var stored = await system.ServicesOf(nameof(Ingress)).GetRequiredService<AppStore>().FindAsync(app.AppId, CancellationToken.None);
        var (token, _) = tokens.Issue(app.AppId, "short-lived", stored!.Secrets[0].Id, TimeSpan.FromSeconds(3));
        await using var client = await system.ConnectAsync(token);
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.Connection.Closed += _ =>
        {
            closed.TrySetResult();
            return Task.CompletedTask;
        };

        await closed.Task.WaitAsync(Patience);
        var rejected = await Record.ExceptionAsync(() => client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "after expiry" }).WaitAsync(Patience));

        Assert.Equal(HubConnectionState.Disconnected, client.Connection.State);
        Assert.NotNull(rejected);
    }

    [Fact]
    public async Task LimitsHoldAcrossTwoIngressInstances()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-limits-" + Guid.NewGuid().ToString("N"));
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { requestsPerMinute = 6 }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        var second = new Uri(await system.StartServiceAsync("Ingress2"));
        string token = await system.IssueUserTokenAsync(app, "busy-user");
        var statuses = new List<HttpStatusCode>();
        string? retryAfter = null;
        try
        {
            // Stay inside one minute window, so the count is not split across windows.
            while (DateTime.UtcNow.Second > 50)
            {
                await Task.Delay(500);
            }

            for (int i = 0; i < 10; i++)
            {
                using var user = system.CreateClient(SystemFixture.Bearer(token), i % 2 == 0 ? system.IngressUrl : second);
                using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "count me " + i });
                statuses.Add(response.StatusCode);
                retryAfter ??= response.Headers.RetryAfter?.Delta?.TotalSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        finally
        {
            await system.StopServiceAsync("Ingress2");
        }

        Assert.Equal(6, statuses.Count(s => s == HttpStatusCode.Accepted));
        Assert.Equal(4, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
        Assert.NotNull(retryAfter);
    }

    [Fact]
    public async Task TokenQuotaStopsPromptsWithoutUpstreamCall()
    {
        var app = await CreateLimitedAppAsync(new { tokensPerDay = 5 });

        string token = await system.IssueUserTokenAsync(app, "heavy-user");
        await using var client = await system.ConnectAsync(token);
        var first = await system.PostPromptAsync(token, "use up the quota please now");
        await client.WaitForResultAsync(first, Patience);
        string marker = "over quota " + Guid.NewGuid().ToString("N");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var rejected = await user.PostAsJsonAsync("/api/prompts", new { prompt = marker });
        var body = await rejected.Content.ReadFromJsonAsync<JsonElement>();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        var usage = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage");

        Assert.Equal(HttpStatusCode.TooManyRequests, rejected.StatusCode);
        Assert.Equal("quota_exceeded", body.GetProperty("code").GetString());
        Assert.NotNull(rejected.Headers.RetryAfter);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
        Assert.True(usage.GetProperty("today").GetProperty("tokens").GetInt64() >= 5);
        Assert.Equal(1, usage.GetProperty("month").GetProperty("requests").GetInt64());
    }

    [Fact]
    public async Task RunningPromptsReserveTheAppQuota()
    {
        var app = await CreateLimitedAppAsync(new { tokensPerDay = 400 });

        // Each prompt may cost about 150 tokens (43 bytes of text, 8 for the message, 100 output tokens), so three fit below 400.
        string marker = "reserved " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("done") with { Usage = new ScriptedUsage(10, 20, 30) })
            : null;
        var accepted = new List<(string User, Guid RequestId)>();
        var rejected = new List<HttpResponseMessage>();
        try
        {
            for (int i = 0; i < 6; i++)
            {
                string userId = $"reserving-user-{i}";
                using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, userId)));
                var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = $"{marker} {i}", maxOutputTokens = 100, stream = false });
                if (response.StatusCode == HttpStatusCode.Accepted)
                {
                    accepted.Add((userId, (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetGuid()));
                    response.Dispose();
                }
                else
                {
                    rejected.Add(response);
                }
            }

            using var developer = system.CreateClient(SystemFixture.Basic(app));
            var export = await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/users/{accepted[0].User}");
            long reserved = await ReservedOnDay(app);

            // The reservations are released once the completions are counted.
            var deadline = DateTime.UtcNow + Patience;
            while (await ReservedOnDay(app) != 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }

            long reservedAfter = await ReservedOnDay(app);
            using var later = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "reserving-user-later")));
            using var afterwards = await later.PostAsJsonAsync("/api/prompts", new { prompt = "after the reserving ones", maxOutputTokens = 100 });

            Assert.Equal(3, accepted.Count);
            if (reserved is < 400 or > 500)
            {
                Assert.Fail(await ReservationReportAsync(app, reserved, accepted, marker));
            }
            Assert.Equal(0, reservedAfter);
            Assert.All(rejected, response =>
            {
                Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
                Assert.Equal(TimeSpan.FromSeconds(5), response.Headers.RetryAfter?.Delta);
            });
            var body = await rejected[0].Content.ReadFromJsonAsync<JsonElement>();
            Assert.Equal("quota_exceeded", body.GetProperty("code").GetString());
            Assert.Equal(3, system.Upstream.Requests.Count(r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true));
            Assert.Equal(accepted[0].RequestId, export.GetProperty("tokenReservations")[0].GetProperty("requestId").GetGuid());
            Assert.Equal(HttpStatusCode.Accepted, afterwards.StatusCode);
        }
        finally
        {
            system.Upstream.Responder = null;
            rejected.ForEach(response => response.Dispose());
        }
    }

    [Fact]
    public async Task WideCharactersReserveTheirBytes()
    {
        var app = await CreateLimitedAppAsync(new { tokensPerDay = 10_000 });
        string marker = "wide " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("done"))
            : null;
        try
        {
            // 2,000 CJK characters are 6,000 UTF-8 bytes and can be as many tokens, so two prompts fill 10,000.
            var statuses = new List<HttpStatusCode>();
            for (int i = 0; i < 4; i++)
            {
                using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, $"wide-user-{i}")));
                using var response = await user.PostAsJsonAsync("/api/prompts",
                    new { prompt = $"{marker} {i} " + new string('中', 2_000), maxOutputTokens = 100, stream = false });
                statuses.Add(response.StatusCode);
            }

            Assert.Equal([HttpStatusCode.Accepted, HttpStatusCode.Accepted, HttpStatusCode.TooManyRequests, HttpStatusCode.TooManyRequests], statuses);
        }
        finally
        {
            system.Upstream.Responder = null;
        }
    }

    [Fact]
    public async Task ErasedUsersSpendStaysOnTheAppsBill()
    {
        var app = await CreateLimitedAppAsync(new { tokensPerMonth = 1_000_000 });
        string marker = "erased mid-prompt " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == marker
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("done") with { Usage = new ScriptedUsage(10, 20, 30) })
            : null;
        try
        {
            using var developer = system.CreateClient(SystemFixture.Basic(app));
            string token = await system.IssueUserTokenAsync(app, "leaving-mid-prompt");
            await using var client = await system.ConnectAsync(token);
            var requestId = await system.PostPromptAsync(token, marker, stream: false);
            await SystemFixture.WaitUntilAsync(() => system.Upstream.Requests.Any(r => r.LastUserMessage == marker));
            using (var erase = await developer.DeleteAsync($"/api/apps/{app.AppId}/users/leaving-mid-prompt"))
            {
                Assert.Equal(HttpStatusCode.OK, erase.StatusCode);
            }

            await client.WaitForResultAsync(requestId, Patience);
            var deadline = DateTime.UtcNow + Patience;
            long tokens = 0;
            while (tokens == 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
                tokens = (await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage")).GetProperty("month").GetProperty("tokens").GetInt64();
            }

            var userCounters = await system.FindAsync(
                Builders<BsonDocument>.Filter.Eq("appId", app.AppId) & Builders<BsonDocument>.Filter.Eq("scope", "user-month"), AddOnEvents.Common.Storage.UsageStore.CollectionName);

            Assert.Equal(30, tokens);
            Assert.Empty(userCounters);
        }
        finally
        {
            system.Upstream.Responder = null;
        }
    }

    [Fact]
    public async Task FailedPromptsReleaseTheirReservations()
    {
        var app = await CreateLimitedAppAsync(new { tokensPerMonth = 1_000_000 });

        string marker = "give back " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == $"{marker} fails" ? ScriptedResponse.Error(400, "invalid_request_error", "no")
            : r.LastUserMessage == $"{marker} slow" ? ScriptedResponse.Slow(TimeSpan.FromSeconds(20), ScriptedResponse.Answer("late"))
            : null;
        try
        {
            string token = await system.IssueUserTokenAsync(app, "give-back-user");
            await using var client = await system.ConnectAsync(token);
            var failing = await system.PostPromptAsync(token, $"{marker} fails", stream: false);
            var slow = await system.PostPromptAsync(token, $"{marker} slow", stream: false);
            await SystemFixture.WaitUntilAsync(() => system.Upstream.Requests.Any(r => r.LastUserMessage == $"{marker} slow"));
            using var user = system.CreateClient(SystemFixture.Bearer(token));
            using (var cancel = await user.PostAsync($"/api/prompts/{slow}/cancel", null))
            {
                Assert.True(cancel.IsSuccessStatusCode);
            }

            var failed = await client.WaitForResultAsync(failing, Patience);
            var cancelled = await client.WaitForResultAsync(slow, Patience);
            var deadline = DateTime.UtcNow + Patience;
            while (await ReservedInMonth(app) != 0 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }

            Assert.Equal("PromptFailed", failed.Kind);
            Assert.Equal("cancelled", cancelled.Code);
            Assert.Equal(0, await ReservedInMonth(app));
            Assert.Empty(await system.Database.GetCollection<BsonDocument>("tokenReservations")
                .Find(Builders<BsonDocument>.Filter.Eq("appId", app.AppId)).ToListAsync());
        }
        finally
        {
            system.Upstream.Responder = null;
        }
    }

    /// <summary>Creates an app with an active key and the given operator limits.</summary>
    private async Task<TestApp> CreateLimitedAppAsync(object limits)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-limited-" + Guid.NewGuid().ToString("N"));
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", limits);
        Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        return app;
    }

    /// <summary>Returns the results, counters and upstream requests of the reserving prompts, so a failure shows where the reservation went.</summary>
    private async Task<string> ReservationReportAsync(TestApp app, long reserved, List<(string User, Guid RequestId)> accepted, string marker)
    {
        var lines = new List<string> { $"{reserved} tokens reserved" };
        foreach (var (userId, requestId) in accepted)
        {
            using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, userId)));
            using var response = await user.GetAsync($"/api/prompts/{requestId}");
            lines.Add($"{requestId}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }

        var counters = await system.FindAsync(Builders<BsonDocument>.Filter.Eq("appId", app.AppId), AddOnEvents.Common.Storage.UsageStore.CollectionName);
        lines.AddRange(counters.Select(counter => "counter: " + counter));
        var dayCounters = await system.FindAsync(
            Builders<BsonDocument>.Filter.Eq("_id", $"{app.AppId}|day|{DateTime.UtcNow:yyyy-MM-dd}"), AddOnEvents.Common.Storage.UsageStore.CollectionName);
        lines.Add($"day counter read by id now: {string.Join(", ", dayCounters)}");
        var reservations = await system.FindAsync(Builders<BsonDocument>.Filter.Eq("appId", app.AppId), "tokenReservations");
        lines.AddRange(reservations.Select(reservation => "reservation: " + reservation));
        lines.Add($"upstream requests: {system.Upstream.Requests.Count(r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true)}, "
            + $"queued responses: {system.Upstream.QueuedResponseCount}");
        return string.Join("\n", lines);
    }

    private Task<long> ReservedInMonth(TestApp app) => ReservedAsync($"{app.AppId}|month|{DateTime.UtcNow:yyyy-MM}");

    private Task<long> ReservedOnDay(TestApp app) => ReservedAsync($"{app.AppId}|day|{DateTime.UtcNow:yyyy-MM-dd}");

    private async Task<long> ReservedAsync(string counterId)
    {
        var counter = (await system.FindAsync(Builders<BsonDocument>.Filter.Eq("_id", counterId), AddOnEvents.Common.Storage.UsageStore.CollectionName)).SingleOrDefault();
        return counter?.GetValue("reserved", 0).ToInt64() ?? 0;
    }

    [Fact]
    public async Task UserRateLimitFromTokenApplies()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-user-rpm-" + Guid.NewGuid().ToString("N"));
        using var host = system.CreateClient(SystemFixture.Basic(app));
        using var issued = await host.PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens", new { userId = "limited", requestsPerMinute = 2 });
        string token = (await issued.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
        while (DateTime.UtcNow.Second > 55)
        {
            await Task.Delay(500);
        }

        using var user = system.CreateClient(SystemFixture.Bearer(token));
        var statuses = new List<HttpStatusCode>();
        for (int i = 0; i < 3; i++)
        {
            using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi " + i });
            statuses.Add(response.StatusCode);
        }

        Assert.Equal([HttpStatusCode.Accepted, HttpStatusCode.Accepted, HttpStatusCode.TooManyRequests], statuses);
    }

    [Fact]
    public async Task NoisyUserLeavesAppBudgetToOthers()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-noisy-" + Guid.NewGuid().ToString("N"));
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { requestsPerMinute = 5, userRequestsPerMinute = 2 }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var noisy = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "noisy")));
        using var quiet = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "quiet")));
        while (DateTime.UtcNow.Second > 50)
        {
            await Task.Delay(500);
        }

        var noisyStatuses = new List<HttpStatusCode>();
        for (int i = 0; i < 8; i++)
        {
            using var response = await noisy.PostAsJsonAsync("/api/prompts", new { prompt = "again " + i });
            noisyStatuses.Add(response.StatusCode);
        }

        using var quietResponse = await quiet.PostAsJsonAsync("/api/prompts", new { prompt = "my first this minute" });

        Assert.Equal(2, noisyStatuses.Count(s => s == HttpStatusCode.Accepted));
        Assert.Equal(HttpStatusCode.Accepted, quietResponse.StatusCode);
    }

    [Fact]
    public async Task TraceLogsOmitPromptAndUserId()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-private-" + Guid.NewGuid().ToString("N"));
        string userId = "private-person-" + Guid.NewGuid().ToString("N");
        string prompt = "my private question " + Guid.NewGuid().ToString("N");
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, userId));

        var submitted = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", new { prompt }).WaitAsync(Patience);
        await client.WaitForResultAsync(submitted.GetProperty("requestId").GetGuid(), Patience);
        using var host = system.CreateClient(SystemFixture.Basic(app));
        using var export = await host.GetAsync($"/api/apps/{app.AppId}/users/{userId}");
        using var mistyped = await host.GetAsync($"/api/apps/{app.AppId}/users/{userId}/usage");

        Assert.Equal(HttpStatusCode.OK, export.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, mistyped.StatusCode);
        Assert.DoesNotContain(system.Logs.Entries, entry => entry.Contains(prompt, StringComparison.Ordinal));
        Assert.DoesNotContain(system.Logs.Entries, entry => entry.Contains(userId, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ConnectionsPerUserAreCapped()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "many-tabs");
        var open = new List<AddOnClient>();
        try
        {
            for (int i = 0; i < 20; i++)
            {
                open.Add(await system.ConnectAsync(token));
            }

            await using var extra = AddOnClient.Create(system.IngressUrl, token);
            var rejected = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
            var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            extra.Connection.On<JsonElement>("ConnectionRejected", payload => rejected.TrySetResult(payload.Clone()));
            extra.Connection.Closed += _ =>
            {
                closed.TrySetResult();
                return Task.CompletedTask;
            };
            await extra.Connection.StartAsync().WaitAsync(Patience);
            var reason = await rejected.Task.WaitAsync(Patience);
            await closed.Task.WaitAsync(Patience);
            await using var otherUser = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "one-tab"));

            Assert.Equal("too_many_connections", reason.GetProperty("code").GetString());
            Assert.Equal(HubConnectionState.Disconnected, extra.Connection.State);
            Assert.All(open, client => Assert.Equal(HubConnectionState.Connected, client.Connection.State));
            Assert.Equal(HubConnectionState.Connected, otherUser.Connection.State);
        }
        finally
        {
            foreach (var client in open)
            {
                await client.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task DisallowedModelIsRejected()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-models-" + Guid.NewGuid().ToString("N"));
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels = new[] { "gpt-4o-mini" } }))
        {
        }

        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "u")));
        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi", model = "gpt-expensive" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("model_not_allowed", (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString());
    }

    [Theory]
    [InlineData("expired")]
    [InlineData("wrong-audience")]
    [InlineData("wrong-key")]
    [InlineData("no-secret-id")]
    public async Task BadTokensAreRejectedOnHttpAndHub(string kind)
    {
        var app = await system.CreateAppAsync();
        string token = ForgeToken(app.AppId, kind);
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });
        var hubFailure = await Record.ExceptionAsync(() => system.ConnectAsync(token));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.NotNull(hubFailure);
        Assert.Contains("401", hubFailure.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("@app")]
    [InlineData(".")]
    [InlineData("..")]
    public async Task ReservedUserIdTokenIsRejected(string userId)
    {
        var app = await system.CreateAppAsync();
        var issued = new JwtSecurityTokenHandler().ReadJwtToken(await system.IssueUserTokenAsync(app, "ordinary"));
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = issued.Issuer,
            Audience = "addonevents-addon",
            Subject = new ClaimsIdentity(issued.Claims
                .Where(c => c.Type is not ("sub" or "aud" or "iss" or "exp" or "nbf" or "iat"))
                .Append(new Claim("sub", userId))),
            Expires = DateTime.UtcNow.AddMinutes(10),
            SigningCredentials = new SigningCredentials(
                new SymmetricSecurityKey(Convert.FromBase64String(system.Secrets.TokenSigningKey)), SecurityAlgorithms.HmacSha256),
        };
        string token = new JwtSecurityTokenHandler().CreateEncodedJwt(descriptor);
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });
        var hubFailure = await Record.ExceptionAsync(() => system.ConnectAsync(token));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("401", hubFailure?.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RotatedSecretKeepsOldOneForGrace()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var rotated = await admin.PostAsJsonAsync($"/api/admin/apps/{app.AppId}/secrets", new { graceSeconds = 600 });
        string newSecret = (await rotated.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("appSecret").GetString()!;
        using var oldWorks = await system.CreateClient(SystemFixture.Basic(app)).GetAsync($"/api/apps/{app.AppId}/usage");
        using var revoked = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}/secrets/previous");
        var fresh = app with { Secret = newSecret };
        using var newWorks = await system.CreateClient(SystemFixture.Basic(fresh)).GetAsync($"/api/apps/{app.AppId}/usage");

        // The old secret was verified moments ago, so only the revocation can refuse it now.
        using var oldRevoked = await system.CreateClient(SystemFixture.Basic(app)).PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens",
            new { userId = "after-revoke" });

        Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        Assert.Equal(HttpStatusCode.OK, oldWorks.StatusCode);
        Assert.Equal(HttpStatusCode.NoContent, revoked.StatusCode);
        Assert.Equal(HttpStatusCode.OK, newWorks.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, oldRevoked.StatusCode);
    }

    [Fact]
    public async Task RotationWithoutBodyUsesDefaultGrace()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var rotated = await admin.PostAsync($"/api/admin/apps/{app.AppId}/secrets", null);
        var body = await rotated.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.OK, rotated.StatusCode);
        Assert.Equal(3600, body.GetProperty("previousSecretsExpireInSeconds").GetInt32());
    }

    [Fact]
    public async Task RevokedSecretStopsWorkingOnFreshInstance()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
        using (await admin.PostAsJsonAsync($"/api/admin/apps/{app.AppId}/secrets", new { graceSeconds = 0 }))
        {
        }

        using var old = await system.CreateClient(SystemFixture.Basic(app)).GetAsync($"/api/apps/{app.AppId}/usage");

        Assert.Equal(HttpStatusCode.Unauthorized, old.StatusCode);
    }

    [Fact]
    public async Task ConcurrentRotationsKeepEverySecret()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        var rotations = await Task.WhenAll(Enumerable.Range(0, 6).Select(_ => RotateAsync(admin, app, graceSeconds: 600)));
        var statuses = new List<HttpStatusCode>();
        foreach (var (_, secret) in rotations.Where(r => r.Status == HttpStatusCode.OK))
        {
            using var developer = system.CreateClient(SystemFixture.Basic(app with { Secret = secret! }));
            using var response = await developer.GetAsync($"/api/apps/{app.AppId}/usage");
            statuses.Add(response.StatusCode);
        }

        Assert.All(rotations, r => Assert.Equal(HttpStatusCode.OK, r.Status));
        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
    }

    [Fact]
    public async Task AppStoredWithoutVersionRotates()
    {
        var app = await system.CreateAppAsync();
        var apps = system.Database.GetCollection<BsonDocument>("apps");
        var stored = await apps.Find(new BsonDocument("_id", app.AppId)).SingleAsync().WaitAsync(Patience);
        stored.Remove("version");
        await apps.ReplaceOneAsync(new BsonDocument("_id", app.AppId), stored).WaitAsync(Patience);
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        var (status, secret) = await RotateAsync(admin, app, graceSeconds: 600);
        using var newWorks = await system.CreateClient(SystemFixture.Basic(app with { Secret = secret ?? "" })).GetAsync($"/api/apps/{app.AppId}/usage");
        using var oldWorks = await system.CreateClient(SystemFixture.Basic(app)).GetAsync($"/api/apps/{app.AppId}/usage");

        Assert.False(stored.Contains("version"));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(HttpStatusCode.OK, newWorks.StatusCode);
        Assert.Equal(HttpStatusCode.OK, oldWorks.StatusCode);
    }

    [Fact]
    public async Task RevokeWithSingleSecretConflicts()
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var revoked = await admin.DeleteAsync($"/api/admin/apps/{app.AppId}/secrets/previous");

        Assert.Equal(HttpStatusCode.Conflict, revoked.StatusCode);
        var body = await revoked.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("conflict", body.GetProperty("code").GetString());
        Assert.Contains("graceSeconds", body.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task RevokedSecretEndsItsTokens()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-revoke-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "leaked-user");
        var second = new Uri(await system.StartServiceAsync("Ingress2"));
        try
        {
            await using var onFirst = await system.ConnectAsync(token);
            await using var onSecond = await AddOnClient.ConnectAsync(second, token);
            var closedOnFirst = ClosedTask(onFirst);
            var closedOnSecond = ClosedTask(onSecond);
            var before = await onFirst.Connection.InvokeAsync<JsonElement>("SubmitPrompt", new { prompt = "before the revoke" }).WaitAsync(Patience);
            using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
            using var rotated = await admin.PostAsJsonAsync($"/api/admin/apps/{app.AppId}/secrets", new { graceSeconds = 0 });
            var fresh = app with { Secret = (await rotated.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("appSecret").GetString()! };

            await closedOnFirst.WaitAsync(Patience);
            await closedOnSecond.WaitAsync(Patience);
            using var overHttp = await system.CreateClient(SystemFixture.Bearer(token)).PostAsJsonAsync("/api/prompts", new { prompt = "after" });
            using var withNewToken = await system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(fresh, "leaked-user")))
                .PostAsJsonAsync("/api/prompts", new { prompt = "with a token from the new secret" });

            Assert.Equal(JsonValueKind.String, before.GetProperty("requestId").ValueKind);
            Assert.Equal(HubConnectionState.Disconnected, onFirst.Connection.State);
            Assert.Equal(HubConnectionState.Disconnected, onSecond.Connection.State);
            Assert.Equal(HttpStatusCode.Unauthorized, overHttp.StatusCode);
            Assert.Equal(PromptLimiter.SecretRevokedMessage, (await overHttp.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("message").GetString());
            Assert.Equal(HttpStatusCode.Accepted, withNewToken.StatusCode);
        }
        finally
        {
            await system.StopServiceAsync("Ingress2");
        }
    }

    private static Task ClosedTask(AddOnClient client)
    {
        var closed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        client.Connection.Closed += _ =>
        {
            closed.TrySetResult();
            return Task.CompletedTask;
        };
        return closed.Task;
    }

    /// <summary>Rotates the app's secret and returns the status with the new secret, which is null unless the status is 200.</summary>
    private static async Task<(HttpStatusCode Status, string? Secret)> RotateAsync(HttpClient admin, TestApp app, int graceSeconds)
    {
        using var response = await admin.PostAsJsonAsync($"/api/admin/apps/{app.AppId}/secrets", new { graceSeconds });
        string? secret = response.StatusCode == HttpStatusCode.OK
            ? (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("appSecret").GetString()
            : null;
        return (response.StatusCode, secret);
    }

    private string ForgeToken(string appId, string kind)
    {
        byte[] key = kind == "wrong-key"
            ? System.Security.Cryptography.RandomNumberGenerator.GetBytes(48)
            : Convert.FromBase64String(system.Secrets.TokenSigningKey);
        var now = DateTime.UtcNow;
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = "addonevents",
            Audience = kind == "wrong-audience" ? "someone-else" : "addonevents-addon",
            Subject = new ClaimsIdentity([new Claim("app_id", appId), new Claim("sub", "forged-user")]),
            NotBefore = kind == "expired" ? now.AddMinutes(-20) : now,
            IssuedAt = kind == "expired" ? now.AddMinutes(-20) : now,
            Expires = kind == "expired" ? now.AddMinutes(-10) : now.AddMinutes(10),
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(key), SecurityAlgorithms.HmacSha256),
        };
        return new JwtSecurityTokenHandler().CreateEncodedJwt(descriptor);
    }
}
