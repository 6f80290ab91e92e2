using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace AddOnEvents.Tests;

/// <summary>
/// The services with the Prometheus endpoint on, and every span their tracer providers end kept in memory. The
/// three services share the test process and its activity listeners, so each provider records the spans of all of
/// them and of other fixtures running at the same time. Spans are kept once, by span id.
/// </summary>
public sealed class TelemetryFixture : SystemFixture
{
    private readonly ConcurrentDictionary<ActivitySpanId, Activity> _spans = new();

    public IReadOnlyList<Activity> Spans => [.. _spans.Values];

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        foreach (string name in new[] { nameof(Ingress), nameof(KeyWorker), nameof(PromptWorker) })
        {
            ServicesOf(name).GetRequiredService<TracerProvider>().AddProcessor(new SpanRecorder(_spans));
        }
    }

    public override Dictionary<string, string?> KeyWorkerSettings() => WithPrometheus(base.KeyWorkerSettings());

    public override Dictionary<string, string?> PromptWorkerSettings() => WithPrometheus(base.PromptWorkerSettings());

    public override Dictionary<string, string?> IngressSettings() => WithPrometheus(base.IngressSettings());

    /// <summary>Returns the HTTP address a running service listens on.</summary>
    public Uri AddressOf(string name) =>
        new(ServicesOf(name).GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>Waits until a span matching <paramref name="match"/> has ended, which is after the work it times.</summary>
    public async Task<Activity> WaitForSpanAsync(Func<Activity, bool> match)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline)
        {
            var span = Spans.FirstOrDefault(match);
            if (span is not null)
            {
                return span;
            }

            await Task.Delay(20);
        }

        throw new TimeoutException($"No matching span ended within {Patience}; {Spans.Count} spans were recorded.");
    }

    private static Dictionary<string, string?> WithPrometheus(Dictionary<string, string?> settings) =>
        new(settings) { ["Telemetry:Prometheus"] = "true" };

    private sealed class SpanRecorder(ConcurrentDictionary<ActivitySpanId, Activity> spans) : BaseProcessor<Activity>
    {
        public override void OnEnd(Activity data) => spans.TryAdd(data.SpanId, data);
    }
}

/// <summary>
/// One prompt is traced from Ingress through the bus to the upstream call and back, its spans carry nothing
/// personal or secret, and its metrics count it.
/// </summary>
public sealed class TelemetryTests(TelemetryFixture system) : IClassFixture<TelemetryFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task PromptIsTracedThroughBusToUpstreamAndBack()
    {
        var (app, token, _) = await ArrangeUserAsync();
        await using var client = await system.ConnectAsync(token);

        string prompt = "Trace me " + Guid.NewGuid().ToString("N");
        var requestId = await system.PostPromptAsync(token, prompt, stream: false);
        await client.WaitForResultAsync(requestId, Patience);
        var upstreamCall = await system.WaitForSpanAsync(s => s.OperationName == "upstream chat" && Tag(s, "request_id") == requestId.ToString());
        Predicate<Activity> ingressRequest = s => s.Source.Name == "Microsoft.AspNetCore" && s.Kind == ActivityKind.Server && Tag(s, "url.path") == "/api/prompts";
        Predicate<Activity> published = s => s.Source.Name == Telemetry.MassTransitName && s.Kind == ActivityKind.Producer && Names(s, "PromptRequested");
        Predicate<Activity> consumed = s => s.Source.Name == Telemetry.MassTransitName && s.Kind == ActivityKind.Consumer && Names(s, "PromptRequested");
        Predicate<Activity> upstreamHttp = s => s.Source.Name == "System.Net.Http" && s.Kind == ActivityKind.Client
            && Tag(s, "url.full")?.EndsWith("/v1/chat/completions", StringComparison.Ordinal) == true;
        Predicate<Activity> answerPublished = s => s.Source.Name == Telemetry.MassTransitName && s.Kind == ActivityKind.Producer && Names(s, "PromptCompleted");
        Predicate<Activity> answerConsumed = s => s.Source.Name == Telemetry.MassTransitName && s.Kind == ActivityKind.Consumer && Names(s, "PromptCompleted");
        // Spans end in no fixed order across services: the worker's consume span can end after Ingress has the answer.
        var trace = await WaitForTraceAsync(upstreamCall.TraceId, spans =>
            new[] { ingressRequest, published, consumed, upstreamHttp, answerPublished, answerConsumed }.All(spans.Exists));

        Assert.Contains(trace, ingressRequest);
        Assert.Contains(trace, published);
        Assert.Contains(trace, consumed);
        Assert.Contains(trace, upstreamHttp);
        Assert.Contains(trace, answerPublished);
        Assert.Contains(trace, answerConsumed);
        Assert.Equal(app.AppId, Tag(upstreamCall, "app_id"));
        Assert.Equal(AddOnEventsMetrics.Completed, Tag(upstreamCall, "outcome"));
        Assert.Equal("1", Tag(upstreamCall, "attempt"));

        // The provider is a third party: the trace stays on this side.
        var received = system.Upstream.Requests.Single(r => r.LastUserMessage == prompt);
        Assert.DoesNotContain(received.Headers.Keys, name => name.Equals("traceparent", StringComparison.OrdinalIgnoreCase)
            || name.Equals("baggage", StringComparison.OrdinalIgnoreCase) || name.Equals("tracestate", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task PromptSentOverHubIsTracedFromHubCall()
    {
        var (_, token, _) = await ArrangeUserAsync();
        await using var client = await system.ConnectAsync(token);

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "Hub trace " + Guid.NewGuid().ToString("N") })
            .WaitAsync(Patience);
        await client.WaitForResultAsync(requestId, Patience);
        var upstreamCall = await system.WaitForSpanAsync(s => s.OperationName == "upstream chat" && Tag(s, "request_id") == requestId.ToString());
        var hubCall = await system.WaitForSpanAsync(s => s.Source.Name == "Microsoft.AspNetCore.SignalR.Server" && s.TraceId == upstreamCall.TraceId);

        Assert.Equal("SendPrompt", Tag(hubCall, "rpc.method"));
    }

    [Fact]
    public async Task SpansCarryNoPromptAnswerKeyOrUser()
    {
        string userId = "telemetry-user-" + Guid.NewGuid().ToString("N");
        var (app, token, key) = await ArrangeUserAsync(userId);
        string pseudonym = system.ServicesOf(nameof(Ingress)).GetRequiredService<UserTokens>().Pseudonym(app.AppId, userId);
        string prompt = "Private words " + Guid.NewGuid().ToString("N");
        await using var client = await system.ConnectAsync(token);

        var posted = await system.PostPromptAsync(token, prompt, stream: true);
        await client.WaitForResultAsync(posted, Patience);
        var sent = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
        await client.WaitForResultAsync(sent, Patience);
        // Browsers cannot set headers on WebSockets, so their SignalR client puts the token in the query string.
        using (var browserLike = system.CreateClient())
        using (var negotiated = await browserLike.PostAsync($"/hubs/addon/negotiate?negotiateVersion=1&access_token={token}", null))
        {
            Assert.Equal(HttpStatusCode.OK, negotiated.StatusCode);
        }

        using (var host = system.CreateClient(SystemFixture.Basic(app)))
        using (var export = await host.GetAsync($"/api/apps/{app.AppId}/users/{userId}"))
        {
            Assert.Equal(HttpStatusCode.OK, export.StatusCode);
        }

        await system.WaitForSpanAsync(s => s.Source.Name == "Microsoft.AspNetCore" && Tag(s, "http.route") == "/api/apps/{appId}/users/{userId}");
        await system.WaitForSpanAsync(s => s.Source.Name == "Microsoft.AspNetCore" && Tag(s, "url.path") == "/hubs/addon/negotiate"
            && Tag(s, "url.query")?.Contains("access_token", StringComparison.Ordinal) == true);
        await system.WaitForSpanAsync(s => s.OperationName == "upstream chat" && Tag(s, "request_id") == sent.ToString());
        // The test's own calls to Ingress are traced in this process too; the host backend's spans are not ours.
        string ingress = system.IngressUrl.GetLeftPart(UriPartial.Authority);
        var texts = system.Spans
            .Where(s => !(s.Kind == ActivityKind.Client && Tag(s, "url.full")?.StartsWith(ingress, StringComparison.Ordinal) == true))
            .SelectMany(Texts).ToList();

        Assert.DoesNotContain(texts, t => t.Contains(prompt, StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains("Echo: ", StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains(key, StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains(token, StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains(userId, StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains(pseudonym, StringComparison.Ordinal));
        Assert.DoesNotContain(texts, t => t.Contains(app.Secret, StringComparison.Ordinal));
    }

    [Fact]
    public async Task CompletedPromptIsCountedWithTokens()
    {
        var (app, token, _) = await ArrangeUserAsync();
        await using var client = await system.ConnectAsync(token);
        using var measurements = new AppMeasurements(app.AppId);

        var requestId = await system.PostPromptAsync(token, "Count me", stream: false);
        var usage = (await client.WaitForResultAsync(requestId, Patience)).Json.GetProperty("usage");
        await measurements.WaitForAsync("addonevents.prompts", 1);

        Assert.Equal(1, measurements.Sum("addonevents.prompts", ("outcome", AddOnEventsMetrics.Completed)));
        Assert.Equal(usage.GetProperty("promptTokens").GetInt32(), measurements.Sum("addonevents.tokens", ("type", "input")));
        Assert.Equal(usage.GetProperty("completionTokens").GetInt32(), measurements.Sum("addonevents.tokens", ("type", "output")));
    }

    [Fact]
    public async Task PrometheusEndpointServesPromptCounter()
    {
        var (app, token, _) = await ArrangeUserAsync();
        await using var client = await system.ConnectAsync(token);
        var requestId = await system.PostPromptAsync(token, "Scrape me", stream: false);
        await client.WaitForResultAsync(requestId, Patience);
        using var scraper = system.CreateClient(baseAddress: system.AddressOf(nameof(PromptWorker)));

        string? line = null;
        var deadline = DateTime.UtcNow + Patience;
        while (line is null && DateTime.UtcNow < deadline)
        {
            // The exporter caches a scrape for a moment, so a fresh count can take a second scrape to appear.
            using var response = await scraper.GetAsync(Telemetry.MetricsPath);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            string body = await response.Content.ReadAsStringAsync();
            line = body.Split('\n').FirstOrDefault(l => l.StartsWith("addonevents_prompts", StringComparison.Ordinal) && l.Contains(app.AppId, StringComparison.Ordinal));
            await Task.Delay(line is null ? 200 : 0);
        }

        Assert.NotNull(line);
        Assert.Contains("outcome=\"completed\"", line, StringComparison.Ordinal);
    }

    private async Task<(TestApp App, string Token, string Key)> ArrangeUserAsync(string? userId = null)
    {
        var app = await system.CreateAppAsync("Telemetry");
        string key = "sk-telemetry-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, userId ?? "telemetry-user");
        return (app, token, key);
    }

    /// <summary>Waits until the spans of the trace satisfy <paramref name="complete"/>, or the patience runs out.</summary>
    private async Task<List<Activity>> WaitForTraceAsync(ActivityTraceId traceId, Func<List<Activity>, bool> complete)
    {
        var deadline = DateTime.UtcNow + Patience;
        var trace = new List<Activity>();
        while (DateTime.UtcNow < deadline)
        {
            trace = system.Spans.Where(s => s.TraceId == traceId).ToList();
            if (complete(trace))
            {
                break;
            }

            await Task.Delay(20);
        }

        return trace;
    }

    private static string? Tag(Activity span, string name) =>
        span.TagObjects.FirstOrDefault(t => t.Key == name).Value is { } value ? Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) : null;

    /// <summary>True when the span's name or message type tags name <paramref name="messageType"/>.</summary>
    private static bool Names(Activity span, string messageType) =>
        span.DisplayName.Contains(messageType, StringComparison.Ordinal)
        || span.TagObjects.Any(t => t.Value is string value && value.Contains(messageType, StringComparison.Ordinal));

    /// <summary>Every string a span would export: its name, tag values, events with their tags, and link tags.</summary>
    private static IEnumerable<string> Texts(Activity span)
    {
        yield return span.DisplayName;
        yield return span.StatusDescription ?? "";
        foreach (var tag in span.TagObjects)
        {
            yield return Convert.ToString(tag.Value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
        }

        foreach (var item in span.Events)
        {
            yield return item.Name;
            foreach (var tag in item.Tags)
            {
                yield return Convert.ToString(tag.Value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
            }
        }

        foreach (var link in span.Links)
        {
            foreach (var tag in link.Tags ?? [])
            {
                yield return Convert.ToString(tag.Value, System.Globalization.CultureInfo.InvariantCulture) ?? "";
            }
        }

        foreach (var (_, value) in span.Baggage)
        {
            yield return value ?? "";
        }
    }

    /// <summary>Listens to the AddOnEvents meter of every service in the process and keeps the measurements of one app.</summary>
    private sealed class AppMeasurements : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly ConcurrentQueue<(string Instrument, long Value, Dictionary<string, string?> Tags)> _measurements = new();

        public AppMeasurements(string appId)
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == Telemetry.Name)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
            {
                var byName = new Dictionary<string, string?>();
                foreach (var tag in tags)
                {
                    byName[tag.Key] = Convert.ToString(tag.Value, System.Globalization.CultureInfo.InvariantCulture);
                }

                if (byName.GetValueOrDefault("app_id") == appId)
                {
                    _measurements.Enqueue((instrument.Name, value, byName));
                }
            });
            _listener.Start();
        }

        public long Sum(string instrument, (string Key, string Value) tag) =>
            _measurements.Where(m => m.Instrument == instrument && m.Tags.GetValueOrDefault(tag.Key) == tag.Value).Sum(m => m.Value);

        public async Task WaitForAsync(string instrument, long atLeast)
        {
            var deadline = DateTime.UtcNow + Patience;
            while (_measurements.Where(m => m.Instrument == instrument).Sum(m => m.Value) < atLeast && DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }
        }

        public void Dispose() => _listener.Dispose();
    }
}
