using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;

namespace AddOnEvents.Tests;

/// <summary>
/// The official OpenAI Node.js SDK (the <c>openai</c> npm package pinned in Sdk/package.json) against the
/// OpenAI-compatible endpoint, configured with nothing but Ingress's base URL and an AddOnEvents key. Sdk/openai-sdk-client.js
/// runs one scenario per process and prints what the SDK returned as JSON.
/// </summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class OpenAISdkTests(SystemFixture system)
{
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task CompletionReturnsTextAndUsage()
    {
        var app = await CreateActiveAppAsync("sk-sdk-complete-");
        string prompt = "sdk complete " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Answer("Hello from the SDK test.") with { Usage = new ScriptedUsage(11, 7, 18) }
            : null;

        var result = await RunScriptAsync("complete", AppKey(app), prompt);
        system.Upstream.Responder = null;

        Assert.Equal("chat.completion", result.GetProperty("object").GetString());
        Assert.StartsWith("chatcmpl-", result.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal("gpt-4o-mini", result.GetProperty("model").GetString());
        Assert.Equal(1, result.GetProperty("choiceCount").GetInt32());
        Assert.Equal("assistant", result.GetProperty("role").GetString());
        Assert.Equal("Hello from the SDK test.", result.GetProperty("content").GetString());
        Assert.Equal("stop", result.GetProperty("finishReason").GetString());
        var usage = result.GetProperty("usage");
        Assert.Equal(11, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(7, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(18, usage.GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task StreamDeltasJoinToAnswer()
    {
        var app = await CreateActiveAppAsync("sk-sdk-stream-");
        string token = await system.IssueUserTokenAsync(app, "sdk-stream-user");
        string prompt = "sdk stream " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 40).Select(i => $"piece{i} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(10), finishReason: "length")
            : null;

        var result = await RunScriptAsync("stream", token, prompt);
        system.Upstream.Responder = null;
        var deltas = result.GetProperty("deltas").EnumerateArray().Select(d => d.GetString()).ToList();

        Assert.Equal(string.Concat(words), string.Concat(deltas));
        Assert.Equal(string.Concat(words), result.GetProperty("content").GetString());
        Assert.True(deltas.Count >= 2, $"The answer arrived in {deltas.Count} delta(s), so it was not streamed.");
        Assert.Equal("length", result.GetProperty("finishReason").GetString());
        Assert.Equal(1, result.GetProperty("idCount").GetInt32());
        Assert.Equal(JsonValueKind.Null, result.GetProperty("error").ValueKind);
        Assert.True(result.GetProperty("usage").GetProperty("total_tokens").GetInt32() > 0);
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, SystemFixture.Patience);
        Assert.True(upstream.Stream);
    }

    [Fact]
    public async Task BrokenStreamRaisesApiError()
    {
        var app = await CreateActiveAppAsync("sk-sdk-broken-");
        string token = await system.IssueUserTokenAsync(app, "sdk-broken-user");
        string prompt = "sdk broken stream " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 40).Select(i => $"word{i} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(10)) with { DisconnectAfterPieces = 20 }
            : null;

        var result = await RunScriptAsync("stream", token, prompt);
        system.Upstream.Responder = null;
        string content = result.GetProperty("content").GetString()!;
        var error = result.GetProperty("error");

        Assert.NotEmpty(content);
        Assert.StartsWith(content, string.Concat(words), StringComparison.Ordinal);
        Assert.True(content.Length < string.Concat(words).Length, "The whole answer arrived although the upstream broke off.");
        Assert.Equal(JsonValueKind.Null, result.GetProperty("finishReason").ValueKind);
        Assert.Equal("APIError", error.GetProperty("errorClass").GetString());
        Assert.Equal("upstream_unavailable", error.GetProperty("code").GetString());
        Assert.Equal("addonevents_error", error.GetProperty("type").GetString());
    }

    [Fact]
    public async Task ModelsListReturnsAllowedModels()
    {
        var app = await system.CreateAppAsync();
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels = new[] { "gpt-4o", "gpt-4o-mini" } }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        string token = await system.IssueUserTokenAsync(app, "sdk-models-user");

        var asUser = await RunScriptAsync("models", token);
        var asApp = await RunScriptAsync("models", AppKey(app));

        foreach (var result in new[] { asUser, asApp })
        {
            var ids = result.GetProperty("ids").EnumerateArray().Select(i => i.GetString()).Order(StringComparer.Ordinal).ToList();
            var objects = result.GetProperty("objects").EnumerateArray().Select(o => o.GetString()).Distinct().ToList();
            Assert.Equal(["gpt-4o", "gpt-4o-mini"], ids);
            Assert.Equal(["model"], objects);
        }
    }

    [Fact]
    public async Task WrongSecretRaisesAuthenticationError()
    {
        var app = await system.CreateAppAsync();
        string prompt = "sdk wrong secret " + Guid.NewGuid().ToString("N");

        var result = await RunScriptAsync("error", $"{app.AppId}.not-the-secret", prompt);

        Assert.False(result.GetProperty("succeeded").GetBoolean());
        Assert.Equal("AuthenticationError", result.GetProperty("errorClass").GetString());
        Assert.Equal(401, result.GetProperty("status").GetInt32());
        Assert.Equal("unauthorized", result.GetProperty("code").GetString());
        Assert.Equal("false", result.GetProperty("shouldRetryHeader").GetString());
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task QuotaExceededRaisesRateLimitErrorOnce()
    {
        var app = await CreateActiveAppAsync("sk-sdk-quota-");
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { tokensPerDay = 5 }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", AppKey(app)));
        using var first = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "use up the quota please now" } } });
        using var ingressRequests = new IngressRequestCounter(system.ServicesOf(nameof(Ingress)), "/v1/chat/completions");

        var result = await RunScriptAsync("error", AppKey(app), "over quota " + Guid.NewGuid().ToString("N"));
        await SystemFixture.WaitUntilAsync(() => ingressRequests.Count >= 1);

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.False(result.GetProperty("succeeded").GetBoolean());
        Assert.Equal("RateLimitError", result.GetProperty("errorClass").GetString());
        Assert.Equal(429, result.GetProperty("status").GetInt32());
        Assert.Equal("quota_exceeded", result.GetProperty("code").GetString());

        // Without x-should-retry: false the SDK would send the request twice more, about a second apart.
        Assert.Equal(1, ingressRequests.Count);
        Assert.Equal("false", result.GetProperty("shouldRetryHeader").GetString());
    }

    [Fact]
    public async Task UpstreamQuotaExhaustedIsNotRetried()
    {
        var app = await CreateActiveAppAsync("sk-sdk-upstream-quota-");
        string token = await system.IssueUserTokenAsync(app, "sdk-quota-user");
        string prompt = "sdk upstream quota " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Error(429, "insufficient_quota") : null;

        var result = await RunScriptAsync("error", token, prompt);
        system.Upstream.Responder = null;
        int upstreamRequests = system.Upstream.Requests.Count(r => r.LastUserMessage == prompt);

        Assert.False(result.GetProperty("succeeded").GetBoolean());
        Assert.Equal("RateLimitError", result.GetProperty("errorClass").GetString());
        Assert.Equal(429, result.GetProperty("status").GetInt32());
        Assert.Equal("upstream_quota_exhausted", result.GetProperty("code").GetString());

        // Each SDK attempt is a new prompt for the worker, so a retry would reach the upstream again.
        Assert.Equal(1, upstreamRequests);
        Assert.Equal("false", result.GetProperty("shouldRetryHeader").GetString());
    }

    private async Task<TestApp> CreateActiveAppAsync(string keyPrefix)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, keyPrefix + Guid.NewGuid().ToString("N"));
        return app;
    }

    private static string AppKey(TestApp app) => $"{app.AppId}.{app.Secret}";

    /// <summary>
    /// Runs one scenario of the Node.js script against Ingress and returns the JSON object it printed. The key and
    /// base URL travel in environment variables, so that no key appears on a command line.
    /// </summary>
    private async Task<JsonElement> RunScriptAsync(string scenario, string apiKey, string? prompt = null)
    {
        string folder = SdkFolder();
        var start = new ProcessStartInfo("node")
        {
            WorkingDirectory = folder,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(folder, "openai-sdk-client.js"));
        start.ArgumentList.Add(scenario);

        // Settings of a developer's own OpenAI account would add headers or change the SDK's target.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("OPENAI_", StringComparison.Ordinal)).ToList())
        {
            start.Environment.Remove(name);
        }

        start.Environment["OPENAI_BASE_URL"] = new Uri(system.IngressUrl, "/v1").ToString();
        start.Environment["OPENAI_API_KEY"] = apiKey;
        if (prompt is not null)
        {
            start.Environment["SDK_PROMPT"] = prompt;
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("Starting node failed. Install Node.js, which ./test.sh also needs for npm.");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(ScriptTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"The SDK scenario '{scenario}' did not finish within {ScriptTimeout}.");
        }

        string output = await stdout;
        string errors = await stderr;
        Assert.True(process.ExitCode == 0, $"The SDK scenario '{scenario}' exited with code {process.ExitCode}: {errors}");
        return JsonDocument.Parse(output).RootElement.Clone();
    }

    /// <summary>Returns tests/AddOnEvents.Tests/Sdk, whose node_modules test.sh installs with npm ci.</summary>
    private static string SdkFolder()
    {
        var repo = new DirectoryInfo(AppContext.BaseDirectory);
        while (repo is not null && !File.Exists(Path.Combine(repo.FullName, "AddOnEvents.sln")))
        {
            repo = repo.Parent;
        }

        string folder = Path.Combine(repo?.FullName ?? throw new InvalidOperationException("AddOnEvents.sln not found above the test output."),
            "tests", "AddOnEvents.Tests", "Sdk");
        string package = Path.Combine(folder, "node_modules", "openai", "package.json");
        return File.Exists(package)
            ? folder
            : throw new FileNotFoundException($"The openai npm package is missing: run ./test.sh, or npm ci in {folder}.", package);
    }

    /// <summary>
    /// Counts the requests that one Ingress instance finished on one route, from ASP.NET Core's
    /// <c>http.server.request.duration</c> instrument. Ingress turns its request logs off, so they cannot be counted.
    /// </summary>
    private sealed class IngressRequestCounter : IDisposable
    {
        private readonly MeterListener _listener = new();
        private int _count;

        public IngressRequestCounter(IServiceProvider ingress, string route)
        {
            // Every service in the test process has a meter of this name, and the factory that created each one distinguishes them.
            var meterFactory = ingress.GetRequiredService<IMeterFactory>();
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == "Microsoft.AspNetCore.Hosting"
                    && instrument.Name == "http.server.request.duration"
                    && ReferenceEquals(instrument.Meter.Scope, meterFactory))
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<double>((_, _, tags, _) =>
            {
                foreach (var tag in tags)
                {
                    if (tag.Key == "http.route" && route.Equals(tag.Value as string, StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref _count);
                    }
                }
            });
            _listener.Start();
        }

        public int Count => Volatile.Read(ref _count);

        public void Dispose() => _listener.Dispose();
    }
}
