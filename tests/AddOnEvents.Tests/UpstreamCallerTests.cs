using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;
using AddOnEvents.KeyWorker.Keys;
using AddOnEvents.PromptWorker.Upstream;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AddOnEvents.Tests;

/// <summary>How one upstream call maps every answer and failure of an OpenAI-compatible server, without the bus.</summary>
public sealed class UpstreamCallerTests : IAsyncLifetime
{
    private const string Key = "sk-caller-0123456789abcdefghijklmnop";
    private FakeUpstream _upstream = null!;
    private ServiceProvider _services = null!;

    public async Task InitializeAsync()
    {
        _upstream = await FakeUpstream.StartAsync();
        _upstream.AcceptKey(Key);
        var configuration = new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["Upstream:BaseUrl"] = _upstream.BaseUrl.ToString(), ["Upstream:TimeoutSeconds"] = "5" })
            .Build();
        var services = new ServiceCollection();
        services.AddSingleton(TimeProvider.System);
        services.AddLogging();
        UpstreamClientFactory.AddUpstream(services, configuration);
        services.AddAddOnEventsMetrics();
        services.AddSingleton<ChatCompletionCaller>();
        _services = services.BuildServiceProvider();
    }

    public async Task DisposeAsync()
    {
        await _services.DisposeAsync();
        await _upstream.DisposeAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RejectedKeyMapsToAuthFailed(bool stream)
    {
        _upstream.RejectKey(Key);

        var outcome = await CallAsync(stream);

        Assert.Equal(ErrorCodes.UpstreamAuthFailed, outcome.ErrorCode);
        Assert.False(outcome.Retryable);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UnsendableKeyFailsWithoutQuotingIt(bool stream)
    {
        const string quoted = "sk-proj-QUOTED\"0123456789abcdef";

        var outcome = await CallAsync(stream, apiKey: quoted);

        Assert.Equal(ErrorCodes.KeyInvalid, outcome.ErrorCode);
        Assert.DoesNotContain("QUOTED", outcome.ErrorMessage, StringComparison.Ordinal);
        Assert.Empty(_upstream.Requests);
    }

    [Fact]
    public async Task KeyCheckMarksUnsendableKeyInvalid()
    {
        var checker = new ProviderKeyChecker(_services.GetRequiredService<UpstreamClientFactory>());
        using var key = new ProviderKey("sk-proj-COMMA,0123456789abcdef");

        var result = await checker.CheckAsync(key, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(KeyStates.Invalid, result.State);
        Assert.Equal(ErrorCodes.InvalidKeyFormat, result.ReasonCode);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnswerCarriesTextAndUsage(bool stream)
    {
        var outcome = await CallAsync(stream, "hello there");

        Assert.True(outcome.Succeeded);
        Assert.Equal("Echo: hello there", outcome.Text);
        Assert.Equal("stop", outcome.FinishReason);
        Assert.True(outcome.Usage!.TotalTokens > 0);
    }

    public static TheoryData<ScriptedResponse, string, bool> OddAnswers() => new()
    {
        { ScriptedResponse.Html(502), ErrorCodes.UpstreamUnavailable, true },
        { ScriptedResponse.Html(200), ErrorCodes.UpstreamInvalidResponse, false },
        { ScriptedResponse.Raw(200, "", "application/json"), ErrorCodes.UpstreamInvalidResponse, false },
        { ScriptedResponse.Raw(500, "", "application/json"), ErrorCodes.UpstreamUnavailable, true },
        { ScriptedResponse.Raw(400, "{\"error\":{\"code\":17}}", "application/json"), ErrorCodes.UpstreamBadRequest, false },
        { ScriptedResponse.Raw(400, "{\"error\":\"flat string\"}", "application/json"), ErrorCodes.UpstreamBadRequest, false },
        { ScriptedResponse.Raw(200, "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[]}", "application/json"), ErrorCodes.UpstreamInvalidResponse, false },
        { ScriptedResponse.Error(404, "model_not_found"), ErrorCodes.ModelNotFound, false },
        { ScriptedResponse.Error(429, "insufficient_quota"), ErrorCodes.UpstreamQuotaExhausted, false },
        { ScriptedResponse.Error(403, "model_not_available"), ErrorCodes.UpstreamForbidden, false },
        { ScriptedResponse.RateLimited("3"), ErrorCodes.UpstreamRateLimited, true },
        { ScriptedResponse.Error(503), ErrorCodes.UpstreamUnavailable, true },
        { ScriptedResponse.Answer("filtered", "content_filter"), ErrorCodes.ContentFiltered, false },
        { ScriptedResponse.Raw(200, RefusalBody, "application/json"), ErrorCodes.Refused, false },
        { ScriptedResponse.Slow(TimeSpan.FromSeconds(12), ScriptedResponse.Answer("late")), ErrorCodes.UpstreamTimeout, true },
    };

    [Theory]
    [InlineData("https://api.openai.com/", "https://api.openai.com/")]
    [InlineData("https://api.openai.com/v1", "https://api.openai.com/")]
    [InlineData("https://api.openai.com/v1/", "https://api.openai.com/")]
    [InlineData("http://127.0.0.1:8080", "http://127.0.0.1:8080/")]
    [InlineData("https://gateway.example.com/openai/v1", "https://gateway.example.com/openai/")]
    [InlineData("https://gateway.example.com/v1beta/", "https://gateway.example.com/v1beta/")]
    public void BaseUrlIsServerRoot(string configured, string expected)
    {
        Assert.Equal(new Uri(expected), UpstreamClientFactory.ServerRoot(new Uri(configured)));
    }

    [Theory]
    [MemberData(nameof(OddAnswers))]
    public async Task OddAnswerMapsToStableCode(ScriptedResponse response, string expectedCode, bool retryable)
    {
        _upstream.Enqueue(response);

        var outcome = await CallAsync(stream: false);

        Assert.Equal(expectedCode, outcome.ErrorCode);
        Assert.Equal(retryable, outcome.Retryable);
        Assert.DoesNotContain("nginx", outcome.ErrorMessage ?? "", StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task RateLimitCarriesRetryAfter()
    {
        _upstream.Enqueue(ScriptedResponse.RateLimited("7"));

        var outcome = await CallAsync(stream: false);

        Assert.Equal(TimeSpan.FromSeconds(7), outcome.RetryAfter);
    }

    [Fact]
    public async Task RetryAfterAsHttpDateIsRead()
    {
        string date = DateTimeOffset.UtcNow.AddSeconds(30).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        _upstream.Enqueue(ScriptedResponse.RateLimited(date));

        var outcome = await CallAsync(stream: false);

        Assert.InRange(outcome.RetryAfter!.Value.TotalSeconds, 25, 31);
    }

    [Fact]
    public async Task LengthFinishIsDistinctOutcome()
    {
        _upstream.Enqueue(ScriptedResponse.Answer("cut off", "length"));

        var outcome = await CallAsync(stream: false);

        Assert.True(outcome.Succeeded);
        Assert.Equal("length", outcome.FinishReason);
    }

    [Fact]
    public async Task StreamedPiecesArriveInOrder()
    {
        _upstream.Enqueue(ScriptedResponse.Streamed(["Hel", "lo, ", "wör", "ld 🌍"], TimeSpan.FromMilliseconds(5)));
        var pieces = new List<string>();

        var outcome = await CallAsync(stream: true, onText: text =>
        {
            pieces.Add(text);
            return Task.CompletedTask;
        });

        Assert.Equal("Hello, wörld 🌍", outcome.Text);
        Assert.Equal(outcome.Text, string.Concat(pieces));
    }

    [Fact]
    public async Task UnicodeSurvivesByteForByte()
    {
        string prompt = "Ça va? 你好 👩🏽‍💻 e\u0301";

        var outcome = await CallAsync(stream: false, prompt);

        Assert.Equal("Echo: " + prompt, outcome.Text);
    }

    [Fact]
    public async Task StreamParserHandlesSplitsCommentsAndCrlf()
    {
        string Event(string json) => "data: " + json + "\r\n\r\n";
        string Delta(string text) =>
            "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":"
            + System.Text.Json.JsonSerializer.Serialize(text) + "},\"finish_reason\":null}]}";
        string stream = ": keep-alive\r\n\r\n"
            + Event(Delta("Caf\u00e9 "))
            + ": ping\n\n"
            + Event(Delta("\u4f60\u597d \ud83c\udf0d"))
            + Event("{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}")
            + Event("{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}")
            + "data: [DONE]\r\n\r\n";
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(stream);
        int cafe = stream.IndexOf("Caf", StringComparison.Ordinal);
        int accent = System.Text.Encoding.UTF8.GetByteCount(stream[..(cafe + 3)]) + 1;
        int[] cuts = [5, 30, accent, bytes.Length / 2, bytes.Length / 2 + 3, bytes.Length - 9];
        var chunks = new List<byte[]>();
        int start = 0;
        foreach (int cut in cuts.Order())
        {
            chunks.Add(bytes[start..cut]);
            start = cut;
        }

        chunks.Add(bytes[start..]);
        _upstream.Enqueue(ScriptedResponse.RawStream(chunks, TimeSpan.FromMilliseconds(20)));

        var outcome = await CallAsync(stream: true);

        Assert.True(outcome.Succeeded);
        Assert.Equal("Caf\u00e9 \u4f60\u597d \ud83c\udf0d", outcome.Text);
        Assert.Equal("stop", outcome.FinishReason);
        Assert.Equal(7, outcome.Usage!.TotalTokens);
    }

    private const string RefusalBody =
        "{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"refusal\":\"I can't help with that.\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}";

    [Fact]
    public async Task AnswerWithoutUsageCountsAnEstimate()
    {
        _upstream.Enqueue(ScriptedResponse.Raw(200,
            "{\"id\":\"c1\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,"
            + "\"message\":{\"role\":\"assistant\",\"content\":\"twelve chars\"},\"finish_reason\":\"stop\"}]}", "application/json"));

        var outcome = await CallAsync(stream: false, prompt: new string('p', 40));

        Assert.True(outcome.Succeeded);
        Assert.Equal(new TokenUsage(10, 3, 13), outcome.Usage);
    }

    [Fact]
    public async Task StreamWithoutUsageCountsAnEstimate()
    {
        _upstream.Enqueue(ScriptedResponse.RawStream([Chunk("{\"content\":\"twelve chars\"}", "null"), Chunk("{}", "\"stop\""), Done], TimeSpan.Zero));

        var outcome = await CallAsync(stream: true, prompt: new string('p', 40));

        Assert.True(outcome.Succeeded);
        Assert.Equal(new TokenUsage(10, 3, 13), outcome.Usage);
    }

    [Fact]
    public async Task StreamClosedWithoutFinishReasonIsAFailure()
    {
        _upstream.Enqueue(ScriptedResponse.RawStream([Chunk("{\"content\":\"Echo:\"}", "null")], TimeSpan.Zero));

        var outcome = await CallAsync(stream: true);

        Assert.Equal(ErrorCodes.UpstreamUnavailable, outcome.ErrorCode);
    }

    private static readonly byte[] Done = System.Text.Encoding.UTF8.GetBytes("data: [DONE]\n\n");

    private static byte[] Chunk(string delta, string finishReason) => System.Text.Encoding.UTF8.GetBytes(
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":"
        + delta + ",\"finish_reason\":" + finishReason + "}]}\n\n");

    private async Task<ChatOutcome> CallAsync(bool stream, string prompt = "hi", Func<string, Task>? onText = null, string apiKey = Key)
    {
        var caller = _services.GetRequiredService<ChatCompletionCaller>();
        var message = new PromptRequested(Guid.NewGuid(), Guid.NewGuid(), "app_test", "u_test", "route", "gpt-4o-mini", 100,
            [new ChatTurn("user", prompt)], DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddMinutes(5), stream);
        using var key = new ProviderKey(apiKey);
        return await caller.CallAsync(key, message, stream ? onText ?? (_ => Task.CompletedTask) : null, CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(20));
    }
}
