using System.Net;
using System.Text.Json;
using AddOnEvents.PromptWorker.Prompts;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;

namespace AddOnEvents.Tests;

/// <summary>
/// A PromptWorker that handles one prompt at a time, so a slow prompt keeps the next one waiting in the queue.
/// </summary>
public sealed class QueuedCancelFixture : SystemFixture
{
    public override Dictionary<string, string?> PromptWorkerSettings() => new(base.PromptWorkerSettings())
    {
        ["RabbitMq:ConcurrentMessageLimit"] = "1",
        ["RabbitMq:PrefetchCount"] = "1",
    };
}

/// <summary>Cancels that reach the PromptWorker before it starts on the prompt.</summary>
public sealed class QueuedCancelTests(QueuedCancelFixture system) : IClassFixture<QueuedCancelFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    // Long enough for a cancel to reach the worker while the blocking prompt runs, short enough for a quick test.
    private static readonly TimeSpan BlockerDelay = TimeSpan.FromSeconds(2);

    [Fact]
    public async Task CancelledQueuedPromptSkipsUpstream()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-queued-cancel-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "queued-owner"));
        string blocker = "blocker " + Guid.NewGuid().ToString("N");
        string queued = "queued " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == blocker ? ScriptedResponse.Slow(BlockerDelay, ScriptedResponse.Answer("unblocked")) : null;

        var blockerId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = blocker }).WaitAsync(Patience);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == blocker, Patience);
        int remembered = RememberedCancelCount();
        var queuedId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = queued }).WaitAsync(Patience);
        await client.Connection.InvokeAsync("CancelPrompt", queuedId).WaitAsync(Patience);
        await SystemFixture.WaitUntilAsync(() => RememberedCancelCount() > remembered);
        var blockerResult = await client.WaitForResultAsync(blockerId, Patience);
        var result = await client.WaitForResultAsync(queuedId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal("unblocked", blockerResult.Text);
        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("cancelled", result.Code);
        Assert.Equal("The answer was stopped.", result.Message);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == queued);
    }

    [Fact]
    public async Task CancelReachesWorkerStartedLater()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-cancel-later-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "later-owner");
        await using var client = await system.ConnectAsync(token);
        string queued = "cancelled before any worker ran " + Guid.NewGuid().ToString("N");

        // The stopped worker never receives the prompt, and the one started next never receives the broadcast cancel.
        await system.StopServiceAsync(nameof(PromptWorker));
        Guid requestId;
        HttpResponseMessage whileStopped;
        try
        {
            requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = queued }).WaitAsync(Patience);
            await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
            whileStopped = await system.CreateClient(SystemFixture.Bearer(token)).GetAsync($"/api/prompts/{requestId}");
        }
        finally
        {
            await system.StartServiceAsync(nameof(PromptWorker));
        }

        var result = await client.WaitForResultAsync(requestId, Patience);
        string body = await whileStopped.Content.ReadAsStringAsync();
        whileStopped.Dispose();

        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("cancelled", result.Code);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == queued);
        Assert.Equal("cancelled", JsonDocument.Parse(body).RootElement.GetProperty("code").GetString());
    }

    [Fact]
    public async Task QueuedPromptReadsAsPending()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-queued-pending-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "queued-reader");
        await using var client = await system.ConnectAsync(token);
        string blocker = "pending blocker " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == blocker ? ScriptedResponse.Slow(BlockerDelay, ScriptedResponse.Answer("unblocked")) : null;

        await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = blocker }).WaitAsync(Patience);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == blocker, Patience);
        var queuedId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "waiting in the queue" }).WaitAsync(Patience);
        using var owner = system.CreateClient(SystemFixture.Bearer(token));
        using var whileQueued = await owner.GetAsync($"/api/prompts/{queuedId}");
        string body = await whileQueued.Content.ReadAsStringAsync();
        using var stranger = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "queued-stranger")));
        using var byStranger = await stranger.GetAsync($"/api/prompts/{queuedId}");
        await client.WaitForResultAsync(queuedId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal(HttpStatusCode.OK, whileQueued.StatusCode);
        Assert.Equal("pending", JsonDocument.Parse(body).RootElement.GetProperty("status").GetString());
        Assert.Equal(HttpStatusCode.NotFound, byStranger.StatusCode);
    }

    [Fact]
    public async Task CancelFloodIsLimitedPerUser()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-cancel-flood-" + Guid.NewGuid().ToString("N"));
        string floodToken = await system.IssueUserTokenAsync(app, "flooder");
        await using var flooder = await system.ConnectAsync(floodToken);
        await using var victim = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "victim"));

        var answers = new List<JsonElement>();
        for (int i = 0; i < 40; i++)
        {
            answers.Add(await flooder.Connection.InvokeAsync<JsonElement>("CancelPrompt", Guid.NewGuid()).WaitAsync(Patience));
        }

        using var overHttp = await system.CreateClient(SystemFixture.Bearer(floodToken)).PostAsync($"/api/prompts/{Guid.NewGuid()}/cancel", null);
        var victimsOwn = Guid.NewGuid();
        var victimAnswer = await victim.Connection.InvokeAsync<JsonElement>("CancelPrompt", victimsOwn).WaitAsync(Patience);

        Assert.Equal(30, answers.Count(a => a.GetProperty("requestId").ValueKind == JsonValueKind.String));
        Assert.Equal(10, answers.Count(a => a.GetProperty("code").GetString() == "rate_limited"));
        Assert.Equal(HttpStatusCode.TooManyRequests, overHttp.StatusCode);
        Assert.NotNull(overHttp.Headers.RetryAfter);
        Assert.Equal(victimsOwn, victimAnswer.GetProperty("requestId").GetGuid());
    }

    [Fact]
    public async Task OtherUserCannotCancelQueuedPrompt()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-queued-stranger-" + Guid.NewGuid().ToString("N"));
        string ownerToken = await system.IssueUserTokenAsync(app, "queued-owner");
        await using var owner = await system.ConnectAsync(ownerToken);
        await using var stranger = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "queued-stranger"));
        string blocker = "blocker " + Guid.NewGuid().ToString("N");
        string queued = "kept " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == blocker ? ScriptedResponse.Slow(BlockerDelay, ScriptedResponse.Answer("unblocked")) : null;

        await owner.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = blocker }).WaitAsync(Patience);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == blocker, Patience);
        int remembered = RememberedCancelCount();
        var queuedId = await owner.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = queued }).WaitAsync(Patience);
        await stranger.Connection.InvokeAsync("CancelPrompt", queuedId).WaitAsync(Patience);
        await SystemFixture.WaitUntilAsync(() => RememberedCancelCount() > remembered);
        using var read = await system.CreateClient(SystemFixture.Bearer(ownerToken)).GetAsync($"/api/prompts/{queuedId}");
        string body = await read.Content.ReadAsStringAsync();
        var result = await owner.WaitForResultAsync(queuedId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal("pending", JsonDocument.Parse(body).RootElement.GetProperty("status").GetString());
        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal("Echo: " + queued, result.Text);
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == queued);
    }

    [Fact]
    public async Task CancelledBurstEndsCancelled()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-cancel-burst-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "burst-owner"));
        string marker = "burst " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true
            ? ScriptedResponse.Slow(BlockerDelay, ScriptedResponse.Answer("not stopped"))
            : null;

        var requestIds = new List<Guid>();
        for (int i = 0; i < 8; i++)
        {
            requestIds.Add(await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = $"{marker} {i}" }).WaitAsync(Patience));
        }

        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == $"{marker} 0", Patience);

        // The worker reads cancels in order, so when the cancel of the running first prompt frees it, the cancels of
        // all queued prompts are known already.
        foreach (var requestId in Enumerable.Reverse(requestIds))
        {
            await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
        }

        var codes = new List<string>();
        foreach (var requestId in requestIds)
        {
            var result = await client.WaitForResultAsync(requestId, Patience);
            codes.Add(result.Json.TryGetProperty("code", out var code) ? code.GetString()! : result.Kind);
        }

        system.Upstream.Responder = null;
        var reachedUpstream = system.Upstream.Requests.Where(r => r.LastUserMessage?.StartsWith(marker, StringComparison.Ordinal) == true)
            .Select(r => r.LastUserMessage).ToList();

        Assert.All(codes, code => Assert.Equal("cancelled", code));
        Assert.Equal([$"{marker} 0"], reachedUpstream);
    }

    private int RememberedCancelCount() =>
        system.ServicesOf(nameof(PromptWorker)).GetRequiredService<InFlightPrompts>().RememberedCancelCount;
}
