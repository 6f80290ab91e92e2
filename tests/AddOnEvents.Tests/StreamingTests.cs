using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Common.Storage;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Streamed answers, cancellation, the OpenAI-compatible endpoint and scale-out.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class StreamingTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task StreamedPiecesJoinBySequence()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "stream please " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 120).Select(i => $"word{i} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(5)) : null;

        var requestId = await system.PostPromptAsync(token, prompt);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;
        // Pieces may arrive out of order, even after the final result, so the client joins them by sequence number.
        List<AddOnResult> InOrder() => [.. client.Pieces.Where(p => p.RequestId == requestId).OrderBy(p => p.Json.GetProperty("sequence").GetInt32())];
        string Joined() => string.Concat(InOrder().Select(p => p.Json.GetProperty("text").GetString()));
        await SystemFixture.WaitUntilAsync(() => Joined() == result.Text);
        var pieces = InOrder();
        var sequences = pieces.Select(p => p.Json.GetProperty("sequence").GetInt32()).ToList();

        Assert.Equal(string.Concat(words), result.Text);
        Assert.Equal(result.Text, Joined());
        Assert.Equal(Enumerable.Range(0, pieces.Count), sequences);
        Assert.InRange(pieces.Count, 2, 40);
        Assert.True(result.Json.GetProperty("usage").GetProperty("totalTokens").GetInt32() > 0);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task NonStreamingRequestHasNoPieces()
    {
        var (token, client) = await NewUserAsync();

        var requestId = await system.PostPromptAsync(token, "one piece only", stream: false);
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("Echo: one piece only", result.Text);
        Assert.DoesNotContain(client.Pieces, p => p.RequestId == requestId);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task CancelAbortsUpstreamRequest()
    {
        var (token, client) = await NewUserAsync();
        string prompt = "long story " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 100).Select(i => $"w{i} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(200)) : null;

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await SystemFixture.WaitUntilAsync(() => client.Pieces.Any(p => p.RequestId == requestId));
        await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        await upstream.Completion.WaitAsync(Patience);
        system.Upstream.Responder = null;

        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("cancelled", result.Code);
        Assert.True(upstream.Aborted);
        await client.DisposeAsync();
    }

    [Fact]
    public async Task CancelledStreamCountsItsTokens()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-stream-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "reader");
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string prompt = "read most then cancel " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 100).Select(i => $"word{i:D3} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(100)) : null;

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
        await SystemFixture.WaitUntilAsync(() => client.Pieces.Count(p => p.RequestId == requestId) >= 3);
        await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;
        int streamedCharacters = client.Pieces.Where(p => p.RequestId == requestId).Sum(p => p.Json.GetProperty("text").GetString()!.Length);
        long used = await WaitForUsedTokensAsync(user);

        var month = (await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage")).GetProperty("month");

        Assert.Equal("cancelled", result.Code);
        Assert.True(used >= (prompt.Length + streamedCharacters) / 4, $"{used} tokens counted for {streamedCharacters} streamed characters.");
        Assert.True(used < (prompt.Length + (words.Count * 8)) / 4, $"{used} tokens counted; the whole answer has {words.Count * 8} characters.");
        Assert.Equal(used, month.GetProperty("tokens").GetInt64());
        Assert.Equal(1, month.GetProperty("requests").GetInt64());
    }

    [Fact]
    public async Task BrokenStreamIsStoredAndCounted()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-broken-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "cut-off");
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        string prompt = "the provider drops this stream " + Guid.NewGuid().ToString("N");
        var words = Enumerable.Range(0, 60).Select(i => $"word{i:D3} ").ToList();
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(words, TimeSpan.FromMilliseconds(10)) with { DisconnectAfterPieces = 30 }
            : null;

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;
        int streamedCharacters = client.Pieces.Where(p => p.RequestId == requestId).Sum(p => p.Json.GetProperty("text").GetString()!.Length);
        long used = await WaitForUsedTokensAsync(user);

        var stored = await user.GetFromJsonAsync<JsonElement>($"/api/prompts/{requestId}");

        Assert.Equal("upstream_unavailable", result.Code);
        Assert.True(streamedCharacters > 0, "No piece reached the user before the stream broke.");
        Assert.True(used >= (prompt.Length + streamedCharacters) / 4, $"{used} tokens counted for {streamedCharacters} streamed characters.");
        Assert.Equal("failed", stored.GetProperty("status").GetString());
        Assert.Equal("upstream_unavailable", stored.GetProperty("code").GetString());
        Assert.Single(system.Upstream.Requests, r => r.LastUserMessage == prompt);
    }

    [Fact]
    public async Task CancelledSingleAnswerCountsItsPrompt()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-single-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "impatient");
        await using var client = await system.ConnectAsync(token);
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string prompt = "cancel before the single answer arrives " + Guid.NewGuid().ToString("N") + new string('x', 400);
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Slow(TimeSpan.FromSeconds(5), ScriptedResponse.Answer("too late"))
            : null;

        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt, stream = false }).WaitAsync(Patience);
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await client.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);
        await upstream.Completion.WaitAsync(Patience);
        system.Upstream.Responder = null;
        long used = await WaitForUsedTokensAsync(user);

        var month = (await developer.GetFromJsonAsync<JsonElement>($"/api/apps/{app.AppId}/usage")).GetProperty("month");

        Assert.Equal("cancelled", result.Code);
        Assert.True(upstream.Aborted);
        Assert.True(used >= prompt.Length / 4, $"{used} tokens counted for a prompt of {prompt.Length} characters.");
        Assert.Equal(used, month.GetProperty("tokens").GetInt64());
    }

    [Fact]
    public async Task OtherUserCannotCancel()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-nocancel-" + Guid.NewGuid().ToString("N"));
        await using var owner = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "owner"));
        await using var stranger = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "stranger"));
        string prompt = "mine " + Guid.NewGuid().ToString("N");
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.Slow(TimeSpan.FromSeconds(1), ScriptedResponse.Answer("kept")) : null;

        var requestId = await owner.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt }).WaitAsync(Patience);
        await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        await stranger.Connection.InvokeAsync("CancelPrompt", requestId).WaitAsync(Patience);
        var result = await owner.WaitForResultAsync(requestId, Patience);
        system.Upstream.Responder = null;

        Assert.Equal("kept", result.Text);
    }

    [Fact]
    public async Task OpenAICompatibleEndpointAnswers()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-compat-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, "sdk-user");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gpt-4o-mini",
            messages = new object[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "compat question" } },
        });
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == "compat question", Patience);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        Assert.Equal("Echo: compat question", body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.True(body.GetProperty("usage").GetProperty("total_tokens").GetInt32() > 0);
        Assert.Equal(key, upstream.BearerKey);
        Assert.Equal("system", upstream.Messages[0].Role);
    }

    [Fact]
    public async Task ModelListShowsTheAppsAllowedModels()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "lister");
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        using var anonymous = system.CreateClient();

        using var defaults = await user.GetAsync("/v1/models");
        var defaultList = await defaults.Content.ReadFromJsonAsync<JsonElement>();
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels = new[] { "gpt-4o", "gpt-4o-mini" } }))
        {
            Assert.True(set.IsSuccessStatusCode);
        }

        using var limited = await user.GetAsync("/v1/models");
        var limitedList = await limited.Content.ReadFromJsonAsync<JsonElement>();
        using var unauthenticated = await anonymous.GetAsync("/v1/models");

        Assert.Equal(HttpStatusCode.OK, defaults.StatusCode);
        Assert.Equal("list", defaultList.GetProperty("object").GetString());
        Assert.Equal(["gpt-4o-mini"], defaultList.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
        Assert.Equal(["gpt-4o", "gpt-4o-mini"], limitedList.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
        Assert.Equal(HttpStatusCode.Unauthorized, unauthenticated.StatusCode);
    }

    [Fact]
    public async Task OpenAICompatibleEndpointStreamsWithAppCredentials()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-stream-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gpt-4o-mini",
            stream = true,
            stream_options = new { include_usage = true },
            messages = new object[] { new { role = "user", content = "stream to an sdk" } },
        });
        string body = await response.Content.ReadAsStringAsync();
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();
        string text = ChatChunks.JoinedContent(events);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("[DONE]", events[^1]);
        Assert.Equal("Echo: stream to an sdk", text);
        Assert.Equal("assistant", JsonDocument.Parse(events[0]).RootElement.GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.Contains(events, e => e.Contains("\"total_tokens\"", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OpenAICompatibleEndpointRejectsWrongCredentials()
    {
        var app = await system.CreateAppAsync();
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.wrong-secret"));

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new { messages = new object[] { new { role = "user", content = "x" } } });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task OpenAICompatibleErrorsUseOpenAIShape()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-size-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        using var anonymous = system.CreateClient();

        using var tooLong = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = new string('a', 16_001) } } });
        using var unauthorized = await anonymous.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "x" } } });
        var tooLongBody = await tooLong.Content.ReadFromJsonAsync<JsonElement>();
        var unauthorizedBody = await unauthorized.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLong.StatusCode);
        Assert.Equal("prompt_too_long", tooLongBody.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        Assert.Equal("unauthorized", unauthorizedBody.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task StreamedFailureBeforeFirstPieceUsesHttpStatus()
    {
        // The add-on can be switched on only with an active key, so the app loses its key after activation.
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-gone-" + Guid.NewGuid().ToString("N"));
        using (var developer = system.CreateClient(SystemFixture.Basic(app)))
        using (var deleted = await developer.DeleteAsync($"/api/apps/{app.AppId}/openai-key"))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }

        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));

        using var plain = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "no key, plain" } } });
        using var streamed = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { stream = true, messages = new object[] { new { role = "user", content = "no key, streamed" } } });
        var plainBody = await plain.Content.ReadFromJsonAsync<JsonElement>();
        var streamedBody = await streamed.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.FailedDependency, plain.StatusCode);
        Assert.Equal("no_key_configured", plainBody.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.FailedDependency, streamed.StatusCode);
        Assert.Equal("no_key_configured", streamedBody.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("application/json", streamed.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task StreamedUpstreamRateLimitKeepsRetryAfter()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-limited-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        string prompt = "limited stream " + Guid.NewGuid().ToString("N");

        // 600 seconds is above the worker's Retry-After cap (Upstream:MaxRetryAfterSeconds, 20 by default), so the
        // worker fails at once instead of waiting.
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.RateLimited("600") : null;
        using var response = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { stream = true, messages = new object[] { new { role = "user", content = prompt } } });
        system.Upstream.Responder = null;
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(600), response.Headers.RetryAfter?.Delta);
        Assert.Equal("upstream_rate_limited", body.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task StreamedFailureAfterFirstPieceStaysInStream()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-filtered-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        string prompt = "filtered stream " + Guid.NewGuid().ToString("N");

        // The pieces are 500 ms apart, so the first one reaches Ingress well before the failure that ends the
        // completion.
        system.Upstream.Responder = r => r.LastUserMessage == prompt
            ? ScriptedResponse.Streamed(["first ", "second "], TimeSpan.FromMilliseconds(500), finishReason: "content_filter")
            : null;
        using var response = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { stream = true, messages = new object[] { new { role = "user", content = prompt } } });
        system.Upstream.Responder = null;
        string body = await response.Content.ReadAsStringAsync();
        var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).ToList();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains(events, e => e.Contains("\"content\":\"first \"", StringComparison.Ordinal));
        Assert.Equal("content_filtered", JsonDocument.Parse(events[^2]).RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("[DONE]", events[^1]);
    }

    [Fact]
    public async Task TextPartsAreJoinedWithNewlines()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-parts-" + Guid.NewGuid().ToString("N"));
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        string first = "first part " + Guid.NewGuid().ToString("N");

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new object[]
            {
                new { role = "user", content = new object[] { new { type = "text", text = first }, new { type = "text", text = "second part" } } },
            },
        });
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage?.StartsWith(first, StringComparison.Ordinal) == true, Patience);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(first + "\nsecond part", upstream.LastUserMessage);
        Assert.Equal("Echo: " + first + "\nsecond part", body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }

    [Fact]
    public async Task TextPartsCountTowardPromptLimit()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "long-parts");
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        var half = new { type = "text", text = new string('a', 8_000) };

        // 8,000 + 1 newline + 8,000 characters is one above the 16,000 limit.
        using var response = await user.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = new object[] { half, half } } } });
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("prompt_too_long", body.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task ImagePartIsRejected()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "image-sender");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new object[]
            {
                new
                {
                    role = "user",
                    content = new object[]
                    {
                        new { type = "text", text = "What is in this picture?" },
                        new { type = "image_url", image_url = new { url = "data:image/png;base64,iVBORw0KGgo=" } },
                    },
                },
            },
        });
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Contains("'image_url'", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Contains("Only text parts are accepted", error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"type\":\"sk-proj-zz9canary9zz\",\"text\":\"hi\"}")]
    [InlineData("{\"type\":\"text\"}")]
    [InlineData("\"just a string in an array\"")]
    public async Task MalformedContentPartIsRejected(string part)
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "odd-parts");
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        string json = "{\"messages\":[{\"role\":\"user\",\"content\":[" + part + "]}]}";

        using var response = await user.PostAsync("/v1/chat/completions", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.DoesNotContain("zz9canary9zz", error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TwoIngressAndTwoWorkersShareWork()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-scale-" + Guid.NewGuid().ToString("N"));
        var second = new Uri(await system.StartServiceAsync("Ingress3"));
        await system.StartServiceAsync("PromptWorker2");
        try
        {
            system.Upstream.Responder = r => r.LastUserMessage?.StartsWith("scale ", StringComparison.Ordinal) == true
                ? ScriptedResponse.Slow(TimeSpan.FromMilliseconds(100), ScriptedResponse.Answer("scaled " + r.LastUserMessage))
                : null;
            await using var first = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "on-first"));
            await using var other = await AddOnClient.ConnectAsync(second, await system.IssueUserTokenAsync(app, "on-second"), system.Http);
            var sent = new List<(AddOnClient Client, Guid RequestId, string Prompt)>();
            for (int i = 0; i < 40; i++)
            {
                var client = i % 2 == 0 ? first : other;
                string prompt = $"scale {i} {Guid.NewGuid():N}";
                sent.Add((client, await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt, stream = false }).WaitAsync(Patience), prompt));
            }

            foreach (var (client, requestId, prompt) in sent)
            {
                Assert.Equal("scaled " + prompt, (await client.WaitForResultAsync(requestId, Patience)).Text);
            }

            var ids = sent.Select(s => s.RequestId).ToList();
            var owners = (await system.FindAsync(Builders<BsonDocument>.Filter.In("_id", ids), PromptResultStore.CollectionName))
                .GroupBy(d => d["leaseOwner"].AsString).Select(g => g.Count()).ToList();

            Assert.Equal(2, owners.Count);
            Assert.All(owners, count => Assert.InRange(count, 8, 32));
            Assert.Equal(20, first.Received.Count);
            Assert.Equal(20, other.Received.Count);
        }
        finally
        {
            system.Upstream.Responder = null;
            await system.StopServiceAsync("Ingress3");
            await system.StopServiceAsync("PromptWorker2");
        }
    }

    [Fact]
    public async Task SecondFinalResultIsDropped()
    {
        var app = await system.CreateAppAsync();
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "twice-told"));
        var services = system.ServicesOf(nameof(Ingress));
        string pseudonym = services.GetRequiredService<AddOnEvents.Ingress.Auth.UserTokens>().Pseudonym(app.AppId, "twice-told");
        string route = services.GetRequiredService<AddOnEvents.Ingress.Prompts.ResultRoute>().RoutingKey;
        var requestId = Guid.NewGuid();
        var answer = new AddOnEvents.Contracts.PromptCompleted(requestId, requestId, app.AppId, pseudonym, route, "only once", "stop",
            new AddOnEvents.Contracts.TokenUsage(1, 1, 2), DateTimeOffset.UtcNow);
        var bus = services.GetRequiredService<MassTransit.IBus>();

        await bus.Publish(answer);
        await bus.Publish(answer);
        await client.WaitForResultAsync(requestId, Patience);
        await Task.Delay(1000);

        Assert.Single(client.Received, r => r.RequestId == requestId);
    }

    private async Task<(string Token, AddOnClient Client)> NewUserAsync()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-stream-" + Guid.NewGuid().ToString("N"));
        string token = await system.IssueUserTokenAsync(app, "streamer");
        return (token, await system.ConnectAsync(token));
    }

    /// <summary>Polls the user's usage until it is above zero, because usage that no quota limits is written after the result.</summary>
    private static async Task<long> WaitForUsedTokensAsync(HttpClient user)
    {
        long used = 0;
        var deadline = DateTime.UtcNow + Patience;
        while (used == 0 && DateTime.UtcNow < deadline)
        {
            used = (await user.GetFromJsonAsync<JsonElement>("/api/me/usage")).GetProperty("usedTokens").GetInt64();
            await Task.Delay(100);
        }

        return used;
    }
}
