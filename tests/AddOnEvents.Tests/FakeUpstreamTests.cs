using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AddOnEvents.Tests.Fixtures;

namespace AddOnEvents.Tests;

public sealed class FakeUpstreamTests : IAsyncLifetime
{
    private const string GoodKey = "sk-test-good-0000000000001111";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    // Static so the class owns no disposable field. Requests use absolute URIs because each test has its own port.
    private static readonly HttpClient Client = new() { Timeout = Timeout };

    private FakeUpstream _upstream = null!;

    public async Task InitializeAsync()
    {
        _upstream = await FakeUpstream.StartAsync().WaitAsync(Timeout);
        _upstream.AcceptKey(GoodKey);
    }

    public async Task DisposeAsync()
    {
        await _upstream.DisposeAsync().AsTask().WaitAsync(Timeout);
    }

    [Fact]
    public void BaseUrlIsLoopbackWithTrailingSlash()
    {
        Assert.Equal("127.0.0.1", _upstream.BaseUrl.Host);
        Assert.NotEqual(0, _upstream.BaseUrl.Port);
        Assert.EndsWith("/", _upstream.BaseUrl.AbsoluteUri, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongKeyGets401QuotingKeyFragment()
    {
        const string wrongKey = "sk-wrong-secretpart-9876";

        using var response = await SendAsync(HttpMethod.Get, "v1/models", wrongKey, body: null);
        var error = await ReadErrorAsync(response);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("invalid_api_key", error["code"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", error["type"]!.GetValue<string>());
        Assert.Equal("Incorrect API key provided: sk-...9876", error["message"]!.GetValue<string>());
        Assert.DoesNotContain("secretpart", error["message"]!.GetValue<string>(), StringComparison.Ordinal);

        var recorded = Assert.Single(_upstream.Requests);
        Assert.Equal(wrongKey, recorded.BearerKey);
        Assert.Equal(401, recorded.StatusCode);
    }

    [Fact]
    public async Task MissingKeyGets401()
    {
        using var response = await SendAsync(HttpMethod.Get, "v1/models", key: null, body: null);
        var error = await ReadErrorAsync(response);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.StartsWith("You didn't provide an API key", error["message"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Null(Assert.Single(_upstream.Requests).BearerKey);
    }

    [Fact]
    public async Task WrongKeyOnChatDoesNotConsumeScript()
    {
        _upstream.Enqueue(ScriptedResponse.Answer("scripted"));

        using var rejected = await PostChatAsync("sk-other-key-1234", "hi");
        using var accepted = await PostChatAsync(GoodKey, "hi");
        var completion = await ReadJsonAsync(accepted);

        Assert.Equal(HttpStatusCode.Unauthorized, rejected.StatusCode);
        Assert.Equal("scripted", completion["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.Equal(2, _upstream.CountRequests(FakeUpstream.ChatCompletionsPath));
    }

    [Fact]
    public async Task ModelsListsOneModel()
    {
        using var response = await SendAsync(HttpMethod.Get, "v1/models", GoodKey, body: null);
        var list = await ReadJsonAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("list", list["object"]!.GetValue<string>());
        var model = Assert.Single(list["data"]!.AsArray())!;
        Assert.Equal("gpt-4o-mini", model["id"]!.GetValue<string>());
        Assert.Equal("model", model["object"]!.GetValue<string>());
    }

    [Fact]
    public async Task DefaultChatEchoesLastUserMessage()
    {
        string body = """
            {"model":"gpt-4o-mini","messages":[
              {"role":"system","content":"Be brief."},
              {"role":"user","content":"first question"},
              {"role":"assistant","content":"first answer here"},
              {"role":"user","content":"how are you"}]}
            """;

        using var response = await SendAsync(HttpMethod.Post, "v1/chat/completions", GoodKey, body);
        var completion = await ReadJsonAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("chatcmpl-fake-", completion["id"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.Equal("chat.completion", completion["object"]!.GetValue<string>());
        Assert.Equal("gpt-4o-mini", completion["model"]!.GetValue<string>());
        var choice = completion["choices"]![0]!;
        Assert.Equal("assistant", choice["message"]!["role"]!.GetValue<string>());
        Assert.Equal("Echo: how are you", choice["message"]!["content"]!.GetValue<string>());
        Assert.Equal("stop", choice["finish_reason"]!.GetValue<string>());

        // The messages have 2 + 2 + 3 + 3 words, and "Echo: how are you" has 4.
        Assert.Equal(10, completion["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(4, completion["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(14, completion["usage"]!["total_tokens"]!.GetValue<int>());

        var recorded = Assert.Single(_upstream.Requests);
        Assert.Equal(4, recorded.Messages.Count);
        Assert.Equal(new RecordedMessage("system", "Be brief."), recorded.Messages[0]);
        Assert.Equal("how are you", recorded.LastUserMessage);
        Assert.False(recorded.Stream);
    }

    [Fact]
    public async Task DefaultChatRejectsInvalidJson()
    {
        using var response = await SendAsync(HttpMethod.Post, "v1/chat/completions", GoodKey, "{not json");
        var error = await ReadErrorAsync(response);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("We could not parse the JSON body", error["message"]!.GetValue<string>(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Enqueued429ThenDefaultResumes()
    {
        _upstream.Enqueue(ScriptedResponse.RateLimited("7"));

        using var limited = await PostChatAsync(GoodKey, "one");
        var error = await ReadErrorAsync(limited);
        using var resumed = await PostChatAsync(GoodKey, "two");
        var completion = await ReadJsonAsync(resumed);

        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.Equal("7", Assert.Single(limited.Headers.GetValues("Retry-After")));
        Assert.Equal("rate_limit_exceeded", error["code"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, resumed.StatusCode);
        Assert.Equal("Echo: two", completion["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.Equal(0, _upstream.QueuedResponseCount);
    }

    [Fact]
    public async Task ChatScriptsDoNotApplyToModels()
    {
        _upstream.Enqueue(ScriptedResponse.Html(502));
        _upstream.Enqueue(ScriptedResponse.Error(500).ForModels());

        using var models = await SendAsync(HttpMethod.Get, "v1/models", GoodKey, body: null);
        using var chat = await PostChatAsync(GoodKey, "hi");
        string html = await chat.Content.ReadAsStringAsync().WaitAsync(Timeout);

        Assert.Equal(HttpStatusCode.InternalServerError, models.StatusCode);
        Assert.Equal(HttpStatusCode.BadGateway, chat.StatusCode);
        Assert.Equal("text/html", chat.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<h1>502 Bad Gateway</h1>", html, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StreamReturnsPiecesAndDone()
    {
        string body = """
            {"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
             "messages":[{"role":"user","content":"tell me more"}]}
            """;

        using var response = await SendAsync(HttpMethod.Post, "v1/chat/completions", GoodKey, body);
        string text = await response.Content.ReadAsStringAsync().WaitAsync(Timeout);
        var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.All(events, data => Assert.StartsWith("data: ", data, StringComparison.Ordinal));
        Assert.Equal("data: [DONE]", events[^1]);

        var chunks = events[..^1].Select(data => JsonNode.Parse(data["data: ".Length..])!).ToList();
        var contentChunks = chunks.Where(chunk => chunk["choices"]!.AsArray().Count > 0).ToList();
        string answer = string.Concat(contentChunks.Select(chunk => chunk["choices"]![0]!["delta"]!["content"]?.GetValue<string>()));
        Assert.Equal("Echo: tell me more", answer);
        Assert.True(contentChunks.Count >= 4, $"expected one chunk per word, got {contentChunks.Count}");
        Assert.All(chunks, chunk => Assert.Equal("chat.completion.chunk", chunk["object"]!.GetValue<string>()));
        Assert.Equal("stop", contentChunks[^1]["choices"]![0]!["finish_reason"]!.GetValue<string>());

        var usage = chunks[^1]["usage"]!;
        Assert.Empty(chunks[^1]["choices"]!.AsArray());
        Assert.Equal(3, usage["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(4, usage["completion_tokens"]!.GetValue<int>());
        Assert.Equal(7, usage["total_tokens"]!.GetValue<int>());

        var recorded = Assert.Single(_upstream.Requests);
        Assert.True(recorded.Stream);
        Assert.True(recorded.IncludeUsage);
    }

    [Fact]
    public async Task StreamCancelledByClientIsRecordedAborted()
    {
        // The piece delay exceeds the wait below, so only noticing the disconnect can complete the request in time.
        _upstream.Enqueue(ScriptedResponse.Streamed(["a", "b", "c"], TimeSpan.FromSeconds(30)));
        string body = """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}""";

        using (var response = await SendAsync(HttpMethod.Post, "v1/chat/completions", GoodKey, body, HttpCompletionOption.ResponseHeadersRead))
        using (var stream = await response.Content.ReadAsStreamAsync().WaitAsync(Timeout))
        using (var reader = new StreamReader(stream))
        using (var cancellation = new CancellationTokenSource())
        {
            string? roleChunk = await reader.ReadLineAsync().WaitAsync(Timeout);
            Assert.StartsWith("data: ", roleChunk, StringComparison.Ordinal);

            // Cancelling a pending read makes SocketsHttpHandler close the connection. Disposing alone would first
            // drain the body for up to its MaxResponseDrainTime.
            var pendingRead = reader.ReadToEndAsync(cancellation.Token);
            await cancellation.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pendingRead.WaitAsync(Timeout));
        }

        var recorded = await _upstream.WaitForRequestAsync(r => r.Stream, Timeout).WaitAsync(Timeout);
        await recorded.Completion.WaitAsync(TimeSpan.FromSeconds(5));

        Assert.True(recorded.Aborted);
    }

    [Fact]
    public async Task ScriptedDisconnectBreaksStream()
    {
        _upstream.Enqueue(ScriptedResponse.Streamed(["one", " two", " three"], TimeSpan.Zero) with { DisconnectAfterPieces = 2 });
        string body = """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}""";

        using var response = await SendAsync(HttpMethod.Post, "v1/chat/completions", GoodKey, body, HttpCompletionOption.ResponseHeadersRead);
        using var stream = await response.Content.ReadAsStreamAsync().WaitAsync(Timeout);
        using var reader = new StreamReader(stream);
        var lines = new List<string>();
        var failure = await Record.ExceptionAsync(async () =>
        {
            while (await reader.ReadLineAsync().WaitAsync(Timeout) is { } line)
            {
                lines.Add(line);
            }
        });

        Assert.IsAssignableFrom<IOException>(failure);
        Assert.Contains(lines, line => line.Contains("\"content\":\" two\"", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, line => line.Contains("three", StringComparison.Ordinal));
        Assert.DoesNotContain("data: [DONE]", lines);
    }

    [Fact]
    public async Task SlowResponseArrivesAfterDelay()
    {
        _upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromMilliseconds(300), ScriptedResponse.Answer("late", "length")));

        var started = DateTimeOffset.UtcNow;
        using var response = await PostChatAsync(GoodKey, "hi");
        var completion = await ReadJsonAsync(response);

        Assert.True(DateTimeOffset.UtcNow - started >= TimeSpan.FromMilliseconds(250));
        Assert.Equal("late", completion["choices"]![0]!["message"]!["content"]!.GetValue<string>());
        Assert.Equal("length", completion["choices"]![0]!["finish_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task ResponderAnswersByPrompt()
    {
        _upstream.Responder = request => request.LastUserMessage is { } prompt && prompt.StartsWith("tenant-a", StringComparison.Ordinal)
            ? ScriptedResponse.Answer("A saw " + prompt)
            : null;

        var prompts = Enumerable.Range(0, 20).Select(i => i % 2 == 0 ? $"tenant-a {i}" : $"tenant-b {i}").ToArray();
        var answers = await Task.WhenAll(prompts.Select(async prompt =>
        {
            using var response = await PostChatAsync(GoodKey, prompt);
            var completion = await ReadJsonAsync(response);
            return completion["choices"]![0]!["message"]!["content"]!.GetValue<string>();
        })).WaitAsync(Timeout);

        for (int i = 0; i < prompts.Length; i++)
        {
            string expected = i % 2 == 0 ? "A saw " + prompts[i] : "Echo: " + prompts[i];
            Assert.Equal(expected, answers[i]);
        }
    }

    [Fact]
    public async Task WaitForRequestSeesLaterRequest()
    {
        var waiting = _upstream.WaitForRequestAsync(r => r.LastUserMessage == "later", Timeout);
        Assert.False(waiting.IsCompleted);

        using var response = await PostChatAsync(GoodKey, "later");
        var recorded = await waiting.WaitAsync(Timeout);

        Assert.Equal("later", recorded.LastUserMessage);
        Assert.Equal(GoodKey, recorded.BearerKey);
    }

    [Fact]
    public async Task WaitForRequestTimesOut()
    {
        await Assert.ThrowsAsync<TimeoutException>(
            () => _upstream.WaitForRequestAsync(_ => false, TimeSpan.FromMilliseconds(100)).WaitAsync(Timeout));
    }

    [Fact]
    public async Task DisposeEndsPendingSlowResponse()
    {
        _upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromMinutes(5), ScriptedResponse.Answer("never")));
        var pending = PostChatAsync(GoodKey, "hi");
        await _upstream.WaitForRequestAsync(r => r.Path == FakeUpstream.ChatCompletionsPath, Timeout).WaitAsync(Timeout);

        await _upstream.DisposeAsync().AsTask().WaitAsync(Timeout);

        await Assert.ThrowsAsync<HttpRequestException>(() => pending.WaitAsync(Timeout));
    }

    [Fact]
    public async Task HandlesManyConcurrentRequests()
    {
        const int count = 300;
        _upstream.Enqueue(ScriptedResponse.Slow(TimeSpan.FromMilliseconds(200), ScriptedResponse.Answer("slow")));

        var statuses = await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
        {
            using var response = await PostChatAsync(GoodKey, $"message {i}");
            return response.StatusCode;
        })).WaitAsync(Timeout);

        Assert.All(statuses, status => Assert.Equal(HttpStatusCode.OK, status));
        Assert.Equal(count, _upstream.CountRequests(FakeUpstream.ChatCompletionsPath));
        Assert.Equal(count, _upstream.Requests.Select(r => r.Sequence).Distinct().Count());
    }

    private async Task<HttpResponseMessage> PostChatAsync(string key, string prompt)
    {
        var body = new JsonObject
        {
            ["model"] = "gpt-4o-mini",
            ["messages"] = new JsonArray { new JsonObject { ["role"] = "user", ["content"] = prompt } },
        };
        return await SendAsync(HttpMethod.Post, "v1/chat/completions", key, body.ToJsonString());
    }

    private async Task<HttpResponseMessage> SendAsync(
        HttpMethod method,
        string path,
        string? key,
        string? body,
        HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead)
    {
        using var request = new HttpRequestMessage(method, new Uri(_upstream.BaseUrl, path));
        if (key is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        return await Client.SendAsync(request, completion).WaitAsync(Timeout);
    }

    private static async Task<JsonNode> ReadJsonAsync(HttpResponseMessage response)
    {
        string text = await response.Content.ReadAsStringAsync().WaitAsync(Timeout);
        try
        {
            return JsonNode.Parse(text)!;
        }
        catch (JsonException exception)
        {
            throw new InvalidOperationException($"Response {(int)response.StatusCode} is not JSON: {text}", exception);
        }
    }

    private static async Task<JsonNode> ReadErrorAsync(HttpResponseMessage response) =>
        (await ReadJsonAsync(response))["error"]!;
}
