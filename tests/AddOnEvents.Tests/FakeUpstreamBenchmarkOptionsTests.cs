using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using AddOnEvents.Tests.Fixtures;

namespace AddOnEvents.Tests;

/// <summary>The options the benchmark starts the fake with: latency, pace, timing reports, any key, no recording.</summary>
public sealed partial class FakeUpstreamBenchmarkOptionsTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);
    private static readonly HttpClient Client = new() { Timeout = Timeout };

    [Fact]
    public async Task LatencyDelaysTheAnswerAndTheTimingReportCoversIt()
    {
        await using var upstream = await StartAsync(new FakeUpstreamOptions
        {
            Latency = TimeSpan.FromMilliseconds(80), ReportTiming = true, AcceptAnyKey = true,
        });

        var watch = Stopwatch.StartNew();
        using var response = await PostChatAsync(upstream, "sk-anything-1234", "hello there", stream: false);
        watch.Stop();
        string content = (await ReadJsonAsync(response))["choices"]![0]!["message"]!["content"]!.GetValue<string>();
        long reported = long.Parse(Marker().Match(content).Groups["us"].Value, CultureInfo.InvariantCulture);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("Echo: hello there [fake rx=", content, StringComparison.Ordinal);
        // Task.Delay may end a few milliseconds early against the stopwatch (timer granularity), hence 75 ms, not 80.
        Assert.InRange(reported, 75_000, (long)(watch.Elapsed.TotalMicroseconds + 1));
        long header = long.Parse(response.Headers.GetValues(FakeUpstreamOptions.TimingHeader).Single(), CultureInfo.InvariantCulture);
        Assert.InRange(header, 75_000, (long)(watch.Elapsed.TotalMicroseconds + 1));
    }

    [Fact]
    public async Task StreamIsPacedAndEndsWithTheTimingPiece()
    {
        await using var upstream = await StartAsync(new FakeUpstreamOptions
        {
            PiecesPerSecond = 20, ReportTiming = true, AcceptAnyKey = true,
        });

        var watch = Stopwatch.StartNew();
        using var response = await PostChatAsync(upstream, "sk-anything-1234", "one two three four", stream: true);
        string events = await response.Content.ReadAsStringAsync();
        watch.Stop();
        var pieces = events.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(e => e["data: ".Length..])
            .Where(data => data != "[DONE]")
            .Select(data => JsonNode.Parse(data)!["choices"]!.AsArray().FirstOrDefault()?["delta"]?["content"]?.GetValue<string>())
            .Where(piece => !string.IsNullOrEmpty(piece))
            .ToList();

        // "Echo:", " one", " two", " three", " four" and the timing piece: five pauses of 50 ms.
        Assert.Equal(6, pieces.Count);
        Assert.Matches(Marker(), pieces[^1]!);
        Assert.True(watch.Elapsed >= TimeSpan.FromMilliseconds(240), $"The stream took only {watch.Elapsed}.");
    }

    [Fact]
    public async Task WithoutRecordingNothingIsKept()
    {
        await using var upstream = await StartAsync(new FakeUpstreamOptions { RecordRequests = false, AcceptAnyKey = true });

        using var response = await PostChatAsync(upstream, "sk-anything-1234", "hi", stream: false);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Empty(upstream.Requests);
    }

    [Fact]
    public async Task AcceptAnyKeyStillRejectsAMissingKey()
    {
        await using var upstream = await StartAsync(new FakeUpstreamOptions { AcceptAnyKey = true });

        using var response = await PostChatAsync(upstream, key: null, "hi", stream: false);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [GeneratedRegex(@" \[fake rx=(?<rx>\d+) us=(?<us>\d+)\]$")]
    private static partial Regex Marker();

    private static Task<FakeUpstream> StartAsync(FakeUpstreamOptions options) => FakeUpstream.StartAsync(options).WaitAsync(Timeout);

    private static async Task<HttpResponseMessage> PostChatAsync(FakeUpstream upstream, string? key, string prompt, bool stream)
    {
        var body = new JsonObject
        {
            ["model"] = FakeUpstream.ModelId,
            ["stream"] = stream,
            ["messages"] = new JsonArray { new JsonObject { ["role"] = "user", ["content"] = prompt } },
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(upstream.BaseUrl, "v1/chat/completions"))
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        if (key is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        return await Client.SendAsync(request);
    }

    private static async Task<JsonNode> ReadJsonAsync(HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
}
