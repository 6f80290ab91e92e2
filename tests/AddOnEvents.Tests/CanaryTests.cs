using System.Net;
using System.Net.Http.Json;
using AddOnEvents.Tests.Fixtures;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>
/// The services reach the database through a proxy the test can cut, and KeyWorker gives up after two retries,
/// so outages and error queues can be driven on purpose.
/// </summary>
public sealed class CanaryFixture : SystemFixture
{
    public TcpProxy MongoProxy { get; private set; } = null!;

    protected override string ServiceMongoUri
    {
        get
        {
            var url = new MongoUrlBuilder(TestEnvironment.MongoUri) { Server = new MongoServerAddress("127.0.0.1", MongoProxy.Port) };
            return url.ToString();
        }
    }

    public override async Task InitializeAsync()
    {
        var target = new MongoUrl(TestEnvironment.MongoUri).Server;
        MongoProxy = new TcpProxy(new IPEndPoint(IPAddress.Loopback, target.Port));
        MongoProxy.Restore();
        await base.InitializeAsync();
    }

    public override async Task DisposeAsync()
    {
        MongoProxy.Restore();
        await base.DisposeAsync();
        await MongoProxy.DisposeAsync();
    }

    public override Dictionary<string, string?> KeyWorkerSettings() => new(base.KeyWorkerSettings())
    {
        ["KeyWorker:RetryLimit"] = "2",
    };

    /// <summary>One attempt per prompt, so every scripted upstream failure reaches the add-on.</summary>
    public override Dictionary<string, string?> PromptWorkerSettings() => new(base.PromptWorkerSettings())
    {
        ["Upstream:MaxAttempts"] = "1",
    };
}

/// <summary>
/// Drives a distinctive canary key through every path, faults included, then scans logs, broker messages and
/// queues, database documents, HTTP responses and SignalR payloads for the key or any 8-character piece of it.
/// </summary>
public sealed class CanaryTests(CanaryFixture system) : IClassFixture<CanaryFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;
    private static readonly string Canary = "sk-canary-" + Guid.NewGuid().ToString("N") + "Zq7Xw9";

    [Fact]
    public async Task CanaryNeverLeavesEncryptedField()
    {
        var app = await system.CreateAppAsync("Canary");
        system.Upstream.AcceptKey(Canary);
        var traced = new List<TracedMessage>();
        ServiceProcess doomed;

        // Register with surrounding whitespace, then replace with the same key: two versions.
        using (var first = await system.PutKeyAsync(app, "  " + Canary + " "))
        {
            Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        }

        await system.WaitForKeyStateAsync(app, "active");
        await system.RegisterActiveKeyAsync(app, Canary);

        // Prompts that succeed and prompts the upstream fails in every way it can.
        string token = await system.IssueUserTokenAsync(app, "canary-user");
        await using var client = await system.ConnectAsync(token);
        await AskAsync(client, token, "PromptCompleted");
        system.Upstream.Enqueue(ScriptedResponse.RateLimited("1"));
        await AskAsync(client, token, "PromptFailed");
        system.Upstream.Enqueue(ScriptedResponse.Error(500, message: "server error while using key " + Canary));
        await AskAsync(client, token, "PromptFailed");
        system.Upstream.Enqueue(ScriptedResponse.Html(502));
        await AskAsync(client, token, "PromptFailed");
        system.Upstream.Enqueue(ScriptedResponse.Raw(400, "{\"error\":{\"message\":\"bad key " + Canary + "\",\"code\":17}}", "application/json"));
        await AskAsync(client, token, "PromptFailed");
        system.Upstream.RejectKey(Canary);
        var rejected = await AskAsync(client, token, "PromptFailed");
        Assert.Equal("upstream_auth_failed", rejected.Code);
        system.Upstream.AcceptKey(Canary);

        // The database goes away while a registration waits in the queue; it is stored once the database is back.
        await system.StopServiceAsync(nameof(KeyWorker));
        using (var pending = await system.PutKeyAsync(app, Canary))
        {
            Assert.Equal(HttpStatusCode.Accepted, pending.StatusCode);
        }

        await system.MongoProxy.CutAsync();
        using (var duringOutage = await system.PutKeyAsync(app, Canary))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, duringOutage.StatusCode);
        }

        await system.StartServiceAsync(nameof(KeyWorker));
        await Task.Delay(TimeSpan.FromSeconds(1));
        system.MongoProxy.Restore();
        await system.WaitForKeyStateAsync(app, "active");

        // KeyWorker's process is killed while the provider check is slow; the message is redelivered to a new one.
        await system.StopServiceAsync(nameof(KeyWorker));
        doomed = ServiceProcess.Start(nameof(KeyWorker), system.KeyWorkerSettings(), system.Logs);
        system.Upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromSeconds(5), ScriptedResponse.Answer("")).ForModels());
        using (var slow = await system.PutKeyAsync(app, Canary))
        {
            Assert.Equal(HttpStatusCode.Accepted, slow.StatusCode);
        }

        var slowCheck = await system.Upstream.WaitForRequestAsync(r => r.Path == "/v1/models" && !r.Completion.IsCompleted, Patience);
        await doomed.KillAsync();
        await system.StartServiceAsync(nameof(KeyWorker));
        var afterCrash = await system.WaitForKeyStateAsync(app, "active");
        Assert.True(afterCrash.GetProperty("version").GetInt64() >= 4);
        Assert.True(slowCheck.Sequence > 0);

        // Retries run out while the database is away: the message is parked in the error queue.
        await system.StopServiceAsync(nameof(KeyWorker));
        using (var parked = await system.PutKeyAsync(app, Canary))
        {
            Assert.Equal(HttpStatusCode.Accepted, parked.StatusCode);
        }

        await system.MongoProxy.CutAsync();
        await system.StartServiceAsync(nameof(KeyWorker));
        await WaitForErrorQueueAsync();
        system.MongoProxy.Restore();

        // Delete removes the document and its wrapped data key.
        using (var developer = system.CreateClient(SystemFixture.Basic(app)))
        using (var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key"))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        var keys = await system.ReadCollectionsAsync("keys");
        Assert.DoesNotContain(keys, d => d["_id"] == app.AppId);

        traced.AddRange(await system.Broker.DrainTraceAsync());
        traced.AddRange(await system.Broker.PeekAllQueuesAsync());
        var documents = await system.ReadCollectionsAsync("keys", "keyVersions", "apps");

        Assert.Contains(traced, m => m.Source.Contains("KeyRegistered", StringComparison.Ordinal) || m.Body.Contains("KeyRegistered", StringComparison.Ordinal));
        Assert.Contains(traced, m => m.Source.StartsWith("queue:", StringComparison.Ordinal) && m.Source.EndsWith("_error", StringComparison.Ordinal));
        await doomed.DisposeAsync();
        AssertNoCanary("log", system.Logs.Entries);
        AssertNoCanary("broker", traced.Select(m => $"{m.Source} {m.Headers} {m.Body}"));
        AssertNoCanary("database", documents.Select(WithoutCiphertext));
        AssertNoCanary("http", system.Http.Responses);
        AssertNoCanary("signalr", client.Received.Select(r => r.Json.GetRawText()));
        Assert.NotEmpty(system.Logs.Entries);
        Assert.NotEmpty(system.Http.Responses);
    }

    private async Task<AddOnResult> AskAsync(AddOnClient client, string token, string expectedKind)
    {
        var requestId = await system.PostPromptAsync(token, "Tell me about canaries " + Guid.NewGuid().ToString("N"));
        var result = await client.WaitForResultAsync(requestId, Patience);
        Assert.Equal(expectedKind, result.Kind);
        return result;
    }

    private async Task WaitForErrorQueueAsync()
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline)
        {
            var depths = await system.Broker.QueueDepthsAsync();
            if (depths.Any(q => q.Key.EndsWith("_error", StringComparison.Ordinal) && q.Value > 0))
            {
                return;
            }

            await Task.Delay(200);
        }

        throw new TimeoutException("No message reached an error queue while the database was away.");
    }

    /// <summary>The stored document with its ciphertext and wrapped data key taken out, since those may hold any bytes.</summary>
    private static string WithoutCiphertext(BsonDocument document)
    {
        var copy = document.DeepClone().AsBsonDocument;
        if (copy.TryGetValue("material", out var material) && material is BsonDocument fields)
        {
            fields.Remove("ciphertext");
            fields.Remove("wrappedDataKey");
            fields.Remove("nonce");
        }

        return copy.ToJson();
    }

    private static void AssertNoCanary(string place, IEnumerable<string> texts)
    {
        var pieces = Enumerable.Range(0, Canary.Length - 7).Select(i => Canary.Substring(i, 8)).ToList();
        foreach (string text in texts)
        {
            Assert.False(text.Contains(Canary, StringComparison.Ordinal), $"The whole canary key appears in a {place} entry.");
            string? hit = pieces.FirstOrDefault(piece => text.Contains(piece, StringComparison.Ordinal));
            Assert.True(hit is null, $"The canary piece '{hit}' appears in a {place} entry: {Excerpt(text, hit)}");
        }
    }

    private static string Excerpt(string text, string? piece)
    {
        int at = piece is null ? 0 : text.IndexOf(piece, StringComparison.Ordinal);
        int start = Math.Max(0, at - 120);
        return text.Substring(start, Math.Min(text.Length - start, 240));
    }
}
