using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Tests.Fixtures;
using MassTransit;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MongoDB.Bson;
using MongoDB.Driver;
using RabbitMQ.Client;

namespace AddOnEvents.Tests;

/// <summary>
/// The services on a RabbitMQ node of their own, which the tests stop and start, with short leases so faults resolve
/// in seconds. The publish timeout keeps its default of 10 s, because an outage must not make callers wait it out.
/// </summary>
public sealed class FailureFixture : SystemFixture
{
    public PrivateBroker Node { get; private set; } = null!;

    public override async Task InitializeAsync()
    {
        Node = await PrivateBroker.StartAsync();
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await Node.DisposeAsync();
    }

    public override Dictionary<string, string?> KeyWorkerSettings() => OnPrivateNode(base.KeyWorkerSettings());

    public override Dictionary<string, string?> PromptWorkerSettings() => OnPrivateNode(new(base.PromptWorkerSettings())
    {
        ["PromptWorker:ClaimLeaseSeconds"] = "3",
        ["Upstream:MaxAttempts"] = "3",
        ["Upstream:RetryBaseDelayMilliseconds"] = "100",

        // Longer than every slow response and stream that the tests expect to arrive, with room for a loaded machine
        // to stretch the 8 s streams of the broker restart tests, so only the timeout test's attempts time out.
        ["Upstream:TimeoutSeconds"] = "15",
    });

    public override Dictionary<string, string?> IngressSettings() => OnPrivateNode(new(base.IngressSettings()));

    private Dictionary<string, string?> OnPrivateNode(Dictionary<string, string?> settings)
    {
        settings["RabbitMq:Port"] = Node.Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        settings["RabbitMq:VirtualHost"] = "/";
        return settings;
    }
}

/// <summary>Upstream errors, retries, duplicates, killed workers, broker restarts and poisoned messages.</summary>
public sealed class FailureTests(FailureFixture system) : IClassFixture<FailureFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task RetryAfterIsHonouredOnEveryAttempt()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "patient " + Guid.NewGuid().ToString("N");
        var script = new Queue<ScriptedResponse>([ScriptedResponse.RateLimited("2"), ScriptedResponse.RateLimited("4")]);
        system.Upstream.Responder = r => r.LastUserMessage == prompt && script.TryDequeue(out var next) ? next : null;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;
        var calls = system.Upstream.Requests.Where(r => r.LastUserMessage == prompt).OrderBy(r => r.ReceivedAt).ToList();

        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal(3, calls.Count);
        Assert.True(calls[1].ReceivedAt - calls[0].ReceivedAt >= TimeSpan.FromSeconds(2));
        Assert.True(calls[2].ReceivedAt - calls[1].ReceivedAt >= TimeSpan.FromSeconds(4));
        Assert.Single(client.Received, r => r.RequestId == requestId);
    }

    [Fact]
    public async Task LongRetryAfterFailsAtOnce()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "impatient " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.RateLimited("600") : null;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal("upstream_rate_limited", result.Code);
        Assert.Equal(600, result.Json.GetProperty("retryAfterSeconds").GetInt32());
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task ServerErrorsAreRetriedUpToBudget()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "failing " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Error(500) : null;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal("upstream_unavailable", result.Code);
        Assert.Equal(3, system.Upstream.Requests.Count(r => r.LastUserMessage == prompt));
    }

    [Fact]
    public async Task TimedOutAttemptCountsItsPrompt()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-timeout-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "slow-user");
        await using var client = await system.ConnectAsync(token);
        string prompt = "slow then fast " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = HangsOnceThenAnswers(prompt, "in time");

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;
        long tokens = await MonthTokensAboveAsync(app, AnswerTokens);

        Assert.Equal("in time", result.Text);
        Assert.Equal(2, system.Upstream.Requests.Count(r => r.LastUserMessage == prompt));

        // The answer's 30 tokens, and at least the prompt's own text again for the attempt that timed out.
        Assert.True(tokens >= AnswerTokens + (prompt.Length / 4), $"counted {tokens} tokens");
    }

    [Fact]
    public async Task OddAnswerThenGoodPromptSucceeds()
    {
        var (token, client) = await NewUserAsync();
        string odd = "odd " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == odd ? ScriptedResponse.Html(200) : null;

        var oddResult = await client.WaitForResultAsync(await system.PostPromptAsync(token, odd, stream: false), Patience);
        system.Upstream.Responder = null;
        var goodResult = await client.WaitForResultAsync(await system.PostPromptAsync(token, "good one"), Patience);

        Assert.Equal("upstream_invalid_response", oddResult.Code);
        Assert.Equal("Echo: good one", goodResult.Text);
    }

    [Fact]
    public async Task DuplicateDeliveryCausesOneCallOneResult()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "twice " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Slow(TimeSpan.FromSeconds(1), ScriptedResponse.Answer("once")) : null;
        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var bus = system.ServicesOf(nameof(Ingress)).GetRequiredService<IBus>();
        var original = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);

        await bus.Publish(await RebuildAsync(token, requestId, prompt));
        await bus.Publish(await RebuildAsync(token, requestId, prompt));
        var result = await client.WaitForResultAsync(requestId, Patience);
        await Task.Delay(TimeSpan.FromSeconds(4));
        system.Upstream.Responder = null;

        Assert.Equal("once", result.Text);
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
        Assert.Single(client.Received, r => r.RequestId == requestId);
        Assert.NotNull(original);
    }

    [Fact]
    public async Task KilledPromptWorkerRequestCompletesOnce()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-failure-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "survivor");
        await using var client = await system.ConnectAsync(token);
        string prompt = "survive " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = HangsOnceThenAnswers(prompt, "Echo: " + prompt);
        await system.StopServiceAsync(nameof(PromptWorker));
        await using var doomed = ServiceProcess.Start(nameof(PromptWorker), system.PromptWorkerSettings(), system.Logs);

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await doomed.KillAsync();
        await system.StartServiceAsync(nameof(PromptWorker));
        var result = await client.WaitForResultAsync(requestId, Patience);
        await Task.Delay(TimeSpan.FromSeconds(2));
        system.Upstream.Responder = null;
        long tokens = await MonthTokensAboveAsync(app, AnswerTokens);

        Assert.Equal("Echo: " + prompt, result.Text);
        Assert.Single(client.Received, r => r.RequestId == requestId);
        Assert.Equal(2, system.Upstream.Requests.Count(r => r.LastUserMessage == prompt));

        // The second worker's AnswerTokens, and the prompt again for the call that was running when the first one died.
        Assert.True(tokens >= AnswerTokens + (prompt.Length / 4), $"counted {tokens} tokens");
    }

    [Fact]
    public async Task BrokerRestartLosesNoAcceptedPrompt()
    {
        var (token, client) = await NewUserAsync();
        string tag = "restart " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage?.StartsWith(tag, StringComparison.Ordinal) == true
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(1), ScriptedResponse.Answer("after the storm"))
            : null;
        var accepted = new List<Guid>();
        for (int i = 0; i < 10; i++)
        {
            accepted.Add(await system.PostPromptAsync(token, $"{tag} {i}", stream: false));
        }

        await system.Node.StopAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        // The first rejection waits at most 2 s for a confirm, because the bus reports the lost connection. The next one does not wait.
        var rejecting = Stopwatch.StartNew();
        using var duringOutage = await user.PostAsJsonAsync("/api/prompts", new { prompt = tag + " refused" });
        var firstRejection = rejecting.Elapsed;
        using var compatibleDuringOutage = await user.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = tag + " refused too" } } });

        // The cancel is recorded in the database, so it answers although its broadcast cannot go out.
        using var cancelDuringOutage = await user.PostAsync($"/api/prompts/{Guid.NewGuid()}/cancel", null).WaitAsync(TimeSpan.FromSeconds(30));
        await Task.Delay(TimeSpan.FromSeconds(2));
        await system.Node.StartAppAsync();
        await WaitUntilReadyAsync();
        for (int i = 10; i < 15; i++)
        {
            accepted.Add(await system.PostPromptAsync(token, $"{tag} {i}", stream: false));
        }

        int finals = 0;
        foreach (var requestId in accepted)
        {
            finals += await FinalResultsAsync(client, user, requestId);
        }

        system.Upstream.Responder = null;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, duringOutage.StatusCode);
        Assert.NotNull(duringOutage.Headers.RetryAfter);
        Assert.True(firstRejection < TimeSpan.FromSeconds(6), $"The first rejection took {firstRejection.TotalSeconds:F1} s; the publish timeout is 10 s.");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, compatibleDuringOutage.StatusCode);
        Assert.NotNull(compatibleDuringOutage.Headers.RetryAfter);
        Assert.Equal(HttpStatusCode.Accepted, cancelDuringOutage.StatusCode);
        Assert.Contains(system.Logs.Entries, entry => entry.Contains("[1010]", StringComparison.Ordinal)
            && entry.Contains(nameof(PromptRequested), StringComparison.Ordinal));
        Assert.Equal(accepted.Count, finals);
        Assert.All(accepted, id => Assert.True(client.Received.Count(r => r.RequestId == id) <= 1));
    }

    [Fact]
    public async Task BrokerRestartKeepsUpstreamCallOpen()
    {
        var (token, client) = await NewUserAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        string prompt = "slow single answer " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(3), ScriptedResponse.Answer("worth the wait"))
            : null;

        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await system.Node.StopAppAsync();
        await upstream.Completion.WaitAsync(Patience);
        await system.Node.StartAppAsync();
        await WaitUntilReadyAsync();
        var result = await FinalResultAsync(client, user, requestId);

        // Time for a redelivery of the prompt, which would show as a second upstream request.
        await Task.Delay(TimeSpan.FromSeconds(5));
        system.Upstream.Responder = null;

        Assert.False(upstream.Aborted, "The broker's outage aborted the upstream request.");
        Assert.Equal("worth the wait", result.GetProperty("text").GetString());
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task BrokerRestartMidStreamCallsUpstreamOnce()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-midstream-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "mid-stream");
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string prompt = "stream through a broker restart " + Guid.NewGuid().ToString("N");
        // About 8 s of stream, for the same reason as in BrokerRestartMidStreamEndsV1Stream below.
        var words = Enumerable.Range(0, 80).Select(i => $"word{i:D3} ").ToList();
        var reported = new ScriptedUsage(15, 60, 75);
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(100)) with { Usage = reported }
            : null;

        var requestId = await system.PostPromptAsync(token, prompt);
        await SystemFixture.WaitUntilAsync(() => client.Pieces.Any(p => p.RequestId == requestId));
        await system.Node.StopAppAsync();
        await Task.Delay(TimeSpan.FromSeconds(2));
        await system.Node.StartAppAsync();
        await WaitUntilReadyAsync();
        var result = await FinalResultAsync(client, user, requestId);

        // Time for a redelivery of the prompt, which would show as a second upstream request or a second count.
        await Task.Delay(TimeSpan.FromSeconds(5));
        system.Upstream.Responder = null;
        var month = (await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage")).GetProperty("month");

        Assert.Equal(string.Concat(words), result.GetProperty("text").GetString());
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
        Assert.Equal(reported.TotalTokens, month.GetProperty("tokens").GetInt64());
        Assert.True(client.Received.Count(r => r.RequestId == requestId) <= 1);
    }

    [Fact]
    public async Task BrokerRestartMidStreamEndsV1Stream()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-v1-midstream-" + Guid.NewGuid().ToString("N"));

        // Not CreateClient, because its capture buffers the whole body, which would hide when each event arrives.
        using var caller = new HttpClient { BaseAddress = system.IngressUrl, Timeout = Patience };
        caller.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}");
        string prompt = "v1 stream through a broker restart " + Guid.NewGuid().ToString("N");

        // About 8 s of stream, which is within the 15 s upstream timeout and longer than rabbitmqctl stop_app, which
        // took 5.6 to 6.7 s on a shared 2-core machine.
        var words = Enumerable.Range(0, 40).Select(i => $"word{i:D3} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(200))
            : null;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = JsonContent.Create(new { stream = true, messages = new object[] { new { role = "user", content = prompt } } }),
        };

        var clock = Stopwatch.StartNew();
        var sentAt = DateTimeOffset.UtcNow;
        using var response = await caller.SendAsync(request, HttpCompletionOption.ResponseHeadersRead).WaitAsync(Patience);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());

        // Ingress writes an event only for a piece with text, so the first line carries the first piece.
        string firstLine = await reader.ReadLineAsync().WaitAsync(Patience) ?? "";
        var firstPieceAt = clock.Elapsed;
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        var upstreamEndedAt = upstream.Completion.ContinueWith(_ => clock.Elapsed, TaskScheduler.Default);

        // The rest is read while the broker is down, so that Ingress never waits on a full socket.
        var rest = reader.ReadToEndAsync();
        await system.Node.StopAppAsync();
        var stoppedAt = clock.Elapsed;
        bool upstreamEndedBeforeStop = upstream.Completion.IsCompleted;
        await Task.Delay(TimeSpan.FromSeconds(2));
        await system.Node.StartAppAsync();
        var startedAt = clock.Elapsed;
        string body = firstLine + "\n" + await rest.WaitAsync(Patience);
        var endedAt = clock.Elapsed;
        await WaitUntilReadyAsync();

        // Time for a redelivery of the prompt, which would show as a second upstream request.
        await Task.Delay(TimeSpan.FromSeconds(5));
        system.Upstream.Responder = null;
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).ToList();
        string text = ChatChunks.JoinedContent(events.Select(e => e["data: ".Length..]));
        string timing = $"upstream request at {(upstream.ReceivedAt - sentAt).TotalSeconds:F1} s, ended at {(await upstreamEndedAt).TotalSeconds:F1} s, "
            + $"first piece at {firstPieceAt.TotalSeconds:F1} s, broker stopped at {stoppedAt.TotalSeconds:F1} s, "
            + $"started at {startedAt.TotalSeconds:F1} s, stream ended at {endedAt.TotalSeconds:F1} s; body:\n{body}";

        Assert.False(upstreamEndedBeforeStop, "The upstream stream ended before the broker stopped: " + timing);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(body.EndsWith("data: [DONE]\n\n", StringComparison.Ordinal), "The stream did not end with [DONE]: " + timing);
        Assert.DoesNotContain(events, e => e.Contains("\"error\"", StringComparison.Ordinal));
        Assert.True(string.Concat(words) == text, $"The streamed text differs from the upstream's answer. Received:\n{text}\n{timing}");
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task LostCancelBroadcastStillStopsAnswer()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "cancel without the broadcast " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 80).Select(i => $"w{i} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(100)) : null;

        // The worker's cancel exchange loses its binding, as while its queue is declared again after an outage.
        var identity = system.ServicesOf(nameof(PromptWorker)).GetRequiredService<AddOnEvents.PromptWorker.Consumers.WorkerIdentity>();
        string cancelExchange = "prompt-cancelled-" + identity.Id.ToLowerInvariant();
        string source = "AddOnEvents.Contracts:PromptCancelled";
        var factory = new ConnectionFactory { HostName = "127.0.0.1", Port = system.Node.Port, UserName = "guest", Password = "guest" };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.ExchangeUnbindAsync(cancelExchange, source, "");
        try
        {
            var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
            var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
            await SystemFixture.WaitUntilAsync(() => client.Pieces.Any(p => p.RequestId == requestId));
            await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
            var result = await client.WaitForResultAsync(requestId, Patience);
            await upstream.Completion.WaitAsync(Patience);

            Assert.Equal("PromptFailed", result.Kind);
            Assert.Equal("cancelled", result.Code);
            Assert.True(upstream.Aborted, "The upstream request ran to its end.");
        }
        finally
        {
            system.Upstream.Responder = null;
            await channel.ExchangeBindAsync(cancelExchange, source, "");
        }
    }

    [Fact]
    public async Task PoisonedPromptLeavesNoTextInQueues()
    {
        string secretText = "poisoned prompt text " + Guid.NewGuid().ToString("N");
        var factory = new ConnectionFactory { HostName = "127.0.0.1", Port = system.Node.Port, UserName = "guest", Password = "guest" };
        await using (var connection = await factory.CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            var properties = new BasicProperties { ContentType = "application/vnd.masstransit+json", Persistent = true };
            byte[] body = Encoding.UTF8.GetBytes("{\"messageType\":[\"urn:message:AddOnEvents.Contracts:PromptRequested\"],\"message\":{\"prompt\":\""
                + secretText + "\",\"requestId\":\"not-a-guid\"");
            await channel.BasicPublishAsync("AddOnEvents.Contracts:PromptRequested", "", mandatory: false, properties, body);
            await WaitUntilTakenAsync(channel, "prompt-requested");
        }

        // Time for a consumer that took it to finish with it, wherever it ends up.
        await Task.Delay(TimeSpan.FromSeconds(3));
        var leftovers = await ReadAllQueuesAsync();

        Assert.DoesNotContain(leftovers, text => text.Contains(secretText, StringComparison.Ordinal));
    }

    // Total tokens in the usage of the reply that HangsOnceThenAnswers returns after its first call.
    private const int AnswerTokens = 30;

    /// <summary>Returns a responder whose first call for the prompt hangs for 30 s and whose later calls answer.</summary>
    private static Func<RecordedRequest, ScriptedResponse?> HangsOnceThenAnswers(string prompt, string answer)
    {
        int calls = 0;
        return r =>
        {
            if (r.LastUserMessage != prompt)
            {
                return null;
            }

            return Interlocked.Increment(ref calls) == 1
                ? ScriptedResponse.Slow(TimeSpan.FromSeconds(30), ScriptedResponse.Answer("too late"))
                : ScriptedResponse.Answer(answer) with { Usage = new ScriptedUsage(10, 20, AnswerTokens) };
        };
    }

    /// <summary>Waits until the app's tokens this month exceed <paramref name="floor"/>, and returns them.</summary>
    private async Task<long> MonthTokensAboveAsync(TestApp app, long floor)
    {
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        long tokens = 0;
        var deadline = DateTime.UtcNow + Patience;
        while (tokens <= floor && DateTime.UtcNow < deadline)
        {
            await Task.Delay(200);
            tokens = (await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage")).GetProperty("month").GetProperty("tokens").GetInt64();
        }

        return tokens;
    }

    private async Task<(string Token, AddOnClient Client)> NewUserAsync()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-failure-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "user-" + Guid.NewGuid().ToString("N")[..6]);
        return (token, await system.ConnectAsync(token));
    }

    /// <summary>Builds a second copy of an accepted prompt, as a redelivery or a duplicate publish would carry it.</summary>
    private async Task<PromptRequested> RebuildAsync(string token, Guid requestId, string prompt)
    {
        var stored = (await system.FindAsync(Builders<BsonDocument>.Filter.Eq("_id", requestId), PromptResultStore.CollectionName)).Single();
        var route = system.ServicesOf(nameof(Ingress)).GetRequiredService<AddOnEvents.Ingress.Prompts.ResultRoute>();
        var now = DateTimeOffset.UtcNow;
        return new PromptRequested(requestId, requestId, stored["appId"].AsString, stored["userId"].AsString, route.RoutingKey, "gpt-4o-mini",
            100, [new ChatTurn("user", prompt)], now, now.AddMinutes(5));
    }

    private async Task WaitUntilReadyAsync()
    {
        using var anonymous = system.CreateClient();
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline)
        {
            using var ready = await anonymous.GetAsync("/health/ready");
            if (ready.IsSuccessStatusCode)
            {
                return;
            }

            await Task.Delay(250);
        }

        throw new TimeoutException("Ingress did not become ready after the broker came back.");
    }

    /// <summary>Counts the final results of a request: pushed over SignalR, or else fetched by request id.</summary>
    private static async Task<int> FinalResultsAsync(AddOnClient client, HttpClient user, Guid requestId)
    {
        try
        {
            await client.WaitForResultAsync(requestId, TimeSpan.FromSeconds(5));
            return client.Received.Count(r => r.RequestId == requestId);
        }
        catch (TimeoutException)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (DateTime.UtcNow < deadline)
            {
                using var response = await user.GetAsync($"/api/prompts/{requestId}");
                if (response.IsSuccessStatusCode
                    && (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("status").GetString() != "pending")
                {
                    return 1;
                }

                await Task.Delay(500);
            }

            return 0;
        }
    }

    /// <summary>Returns the final result of a request as pushed over SignalR, or else as fetched by request id.</summary>
    private static async Task<JsonElement> FinalResultAsync(AddOnClient client, HttpClient user, Guid requestId)
    {
        try
        {
            return (await client.WaitForResultAsync(requestId, TimeSpan.FromSeconds(10))).Json;
        }
        catch (TimeoutException)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (DateTime.UtcNow < deadline)
            {
                using var response = await user.GetAsync($"/api/prompts/{requestId}");
                if (response.IsSuccessStatusCode)
                {
                    var stored = await response.Content.ReadFromJsonAsync<JsonElement>();
                    if (stored.GetProperty("status").GetString() != "pending")
                    {
                        return stored;
                    }
                }

                await Task.Delay(500);
            }

            throw new TimeoutException($"Request {requestId} had no final result within {Patience}.");
        }
    }

    /// <summary>Waits until no message of a queue waits for a consumer, so that a slow machine is not read as a leak.</summary>
    private static async Task WaitUntilTakenAsync(IChannel channel, string queue)
    {
        var deadline = DateTime.UtcNow + Patience;
        while ((await channel.QueueDeclarePassiveAsync(queue)).MessageCount > 0)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"No consumer took the message from {queue} within {Patience}.");
            }

            await Task.Delay(100);
        }
    }

    private async Task<List<string>> ReadAllQueuesAsync()
    {
        var texts = new List<string>();
        var factory = new ConnectionFactory { HostName = "127.0.0.1", Port = system.Node.Port, UserName = "guest", Password = "guest" };
        await using var connection = await factory.CreateConnectionAsync();
        foreach (string queue in new[] { "prompt-requested", "prompt-requested_error", "prompt-requested_skipped" })
        {
            // A missing queue closes the channel, so each queue gets a channel of its own.
            await using var channel = await connection.CreateChannelAsync();
            try
            {
                while (await channel.BasicGetAsync(queue, autoAck: false) is { } message)
                {
                    texts.Add(Encoding.UTF8.GetString(message.Body.Span));
                }
            }
            catch (RabbitMQ.Client.Exceptions.OperationInterruptedException)
            {
                // The queue does not exist, so it holds nothing.
            }
        }

        return texts;
    }
}
