using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AddOnEvents.Tests.Fixtures;

namespace AddOnEvents.Tests;

/// <summary>
/// Request parameters, retry hints and model lookup of the OpenAI-compatible endpoint, as the official OpenAI SDKs
/// use them.
/// </summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class OpenAIParameterTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task SamplingParametersReachUpstream()
    {
        using var caller = await CreateCallerAsync("sk-sampling-");
        string marker = "sampled " + Guid.NewGuid().ToString("N");

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gpt-4o-mini",
            messages = new object[] { new { role = "user", content = marker } },
            temperature = 0.5,
            top_p = 0.25,
            stop = new[] { "END", "STOP" },
            seed = 42,
            presence_penalty = -1.5,
            frequency_penalty = 0.75,
            response_format = new { type = "json_object" },
            user = "ignored-end-user",
        });
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == marker, Patience);
        var body = JsonNode.Parse(upstream.Body)!.AsObject();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(0.5, body["temperature"]!.GetValue<double>());
        Assert.Equal(0.25, body["top_p"]!.GetValue<double>());
        Assert.Equal(["END", "STOP"], body["stop"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal(42, body["seed"]!.GetValue<int>());
        Assert.Equal(-1.5, body["presence_penalty"]!.GetValue<double>());
        Assert.Equal(0.75, body["frequency_penalty"]!.GetValue<double>());
        Assert.Equal("json_object", body["response_format"]!["type"]!.GetValue<string>());
        Assert.False(body.ContainsKey("user"));
    }

    [Fact]
    public async Task StreamedRequestForwardsStopString()
    {
        using var caller = await CreateCallerAsync("sk-sampling-stream-");
        string marker = "sampled stream " + Guid.NewGuid().ToString("N");

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gpt-4o-mini",
            stream = true,
            messages = new object[] { new { role = "user", content = marker } },
            temperature = 1.25,
            stop = "END",
            response_format = new { type = "text" },
        });
        string events = await response.Content.ReadAsStringAsync();
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == marker, Patience);
        var body = JsonNode.Parse(upstream.Body)!.AsObject();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.EndsWith("data: [DONE]\n\n", events, StringComparison.Ordinal);
        Assert.True(upstream.Stream);
        Assert.Equal(1.25, body["temperature"]!.GetValue<double>());
        Assert.Equal(["END"], body["stop"]!.AsArray().Select(s => s!.GetValue<string>()));
        Assert.Equal("text", body["response_format"]!["type"]!.GetValue<string>());
    }

    [Fact]
    public async Task RequestWithoutSamplingSendsNone()
    {
        using var caller = await CreateCallerAsync("sk-no-sampling-");
        string marker = "unsampled " + Guid.NewGuid().ToString("N");

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            model = "gpt-4o-mini",
            messages = new object[] { new { role = "user", content = marker } },
        });
        var upstream = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == marker, Patience);
        var body = JsonNode.Parse(upstream.Body)!.AsObject();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False(body.ContainsKey("temperature"));
        Assert.False(body.ContainsKey("stop"));
        Assert.False(body.ContainsKey("response_format"));
    }

    [Theory]
    [InlineData("\"temperature\": 2.5", "temperature")]
    [InlineData("\"temperature\": -0.1", "temperature")]
    [InlineData("\"top_p\": 1.01", "top_p")]
    [InlineData("\"presence_penalty\": -2.5", "presence_penalty")]
    [InlineData("\"frequency_penalty\": 3", "frequency_penalty")]
    [InlineData("\"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]", "stop")]
    [InlineData("\"stop\": 7", "stop")]
    [InlineData("\"stop\": [\"a\", 7]", "stop")]
    [InlineData("\"seed\": 9999999999", "seed")]
    [InlineData("\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {}}}", "response_format")]
    [InlineData("\"response_format\": {\"type\": \"xml\"}", "response_format")]
    [InlineData("\"response_format\": \"json_object\"", "response_format")]
    [InlineData("\"logprobs\": true", "logprobs")]
    [InlineData("\"top_logprobs\": 3", "top_logprobs")]
    [InlineData("\"logit_bias\": {\"50256\": -100}", "logit_bias")]
    [InlineData("\"n\": 2", "n")]
    [InlineData("\"n\": 0", "n")]
    [InlineData("\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}]", "tools")]
    [InlineData("\"max_tokens\": 0", "max_tokens")]
    public async Task InvalidParameterIsRejectedByName(string field, string param)
    {
        using var caller = await CreateCallerAsync("sk-bad-param-");
        string marker = "rejected " + Guid.NewGuid().ToString("N");
        string json = $"{{\"model\": \"gpt-4o-mini\", \"messages\": [{{\"role\": \"user\", \"content\": \"{marker}\"}}], {field}}}";

        using var response = await caller.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.StartsWith(param + " ", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("false", response.Headers.TryGetValues("x-should-retry", out var values) ? string.Join(",", values) : null);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
    }

    [Fact]
    public async Task JsonSchemaRejectionSaysNotSupported()
    {
        using var caller = await CreateCallerAsync("sk-json-schema-");

        using var response = await caller.PostAsJsonAsync("/v1/chat/completions", new
        {
            messages = new object[] { new { role = "user", content = "structured please" } },
            response_format = new { type = "json_schema", json_schema = new { name = "answer", schema = new { type = "object" } } },
        });
        string message = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error").GetProperty("message").GetString()!;

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("json_schema is not supported", message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"model\": \"sk-not-a-model\", \"messages\": [{\"role\": \"user\", \"content\": \"MARKER\"}]}", "model")]
    [InlineData("{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"MARKER\"}]}", "model")]
    [InlineData("{\"messages\": []}", "messages")]
    [InlineData("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\", \"image_url\": {\"url\": \"MARKER\"}}]}]}", "messages")]
    [InlineData("{\"messages\": [{\"role\": \"tool\", \"content\": \"MARKER\"}]}", "messages")]
    public async Task InvalidModelOrMessagesNamesField(string template, string param)
    {
        using var caller = await CreateCallerAsync("sk-bad-field-", allowedModels: ["gpt-4o-mini"]);
        string marker = "rejected " + Guid.NewGuid().ToString("N");

        using var response = await caller.PostAsync("/v1/chat/completions",
            new StringContent(template.Replace("MARKER", marker, StringComparison.Ordinal), Encoding.UTF8, "application/json"));
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.DoesNotContain(system.Upstream.Requests, r => r.LastUserMessage == marker);
    }

    [Theory]
    [InlineData("\"temperature\": \"hot\"", "temperature", "$.temperature: it must be a number.")]
    [InlineData("\"max_tokens\": true", "max_tokens", "max_tokens must be between 1 and 4096.")]
    [InlineData("\"max_tokens\": 1e12", "max_tokens", "max_tokens must be between 1 and 4096.")]
    [InlineData("\"max_completion_tokens\": \"many\"", "max_completion_tokens", "max_completion_tokens must be between 1 and 4096.")]
    [InlineData("\"stream_options\": {\"include_usage\": \"yes\"}", "stream_options", "$.stream_options.include_usage: it must be a boolean")]
    [InlineData("\"messages\": [{\"role\": 5, \"content\": \"hi\"}]", "messages", "$.messages[0].role: it must be a string.")]
    [InlineData("\"messages\": \"hi\"", "messages", "$.messages: it must be an array.")]
    public async Task WrongTypeNamesTopLevelParam(string field, string param, string expectedPart)
    {
        using var caller = await CreateCallerAsync("sk-wrong-type-");
        string json = field.StartsWith("\"messages\"", StringComparison.Ordinal)
            ? $"{{{field}}}"
            : $"{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}], {field}}}";

        using var response = await caller.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"));
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Contains(expectedPart, error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task SyntaxErrorLeavesParamNull()
    {
        using var caller = await CreateCallerAsync("sk-syntax-param-");

        using var response = await caller.PostAsync("/v1/chat/completions",
            new StringContent("{\"temperature\": 0.5,, \"messages\": []}", Encoding.UTF8, "application/json"));
        var error = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(JsonValueKind.Null, error.GetProperty("param").ValueKind);
        Assert.Contains("line 1, byte 21", error.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task QuotaExceededTellsSdkNotToRetry()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-compat-quota-" + Guid.NewGuid().ToString("N"));
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { tokensPerDay = 5 }))
        {
            Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        }

        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        using var first = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "use up the quota please now" } } });

        using var rejected = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "over quota" } } });
        var error = (await rejected.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, rejected.StatusCode);
        Assert.Equal("quota_exceeded", error.GetProperty("code").GetString());
        Assert.NotNull(rejected.Headers.RetryAfter);
        Assert.Equal(["false"], rejected.Headers.GetValues("x-should-retry"));
    }

    [Fact]
    public async Task UpstreamRateLimitLeavesRetryToSdk()
    {
        using var caller = await CreateCallerAsync("sk-compat-rate-");
        string prompt = "rate limited " + Guid.NewGuid().ToString("N");

        // 600 seconds is above the worker's Retry-After cap, so the worker fails at once instead of waiting.
        system.Upstream.Responder = r => r.LastUserMessage == prompt ? ScriptedResponse.RateLimited("600") : null;
        using var response = await caller.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = prompt } } });
        system.Upstream.Responder = null;

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        Assert.False(response.Headers.Contains("x-should-retry"));
    }

    [Fact]
    public async Task WrongAppSecretIsNamed()
    {
        var app = await system.CreateAppAsync();
        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.wrong-{app.Secret}"));
        using var anonymous = system.CreateClient();
        var body = new { messages = new object[] { new { role = "user", content = "x" } } };

        using var wrongSecret = await caller.PostAsJsonAsync("/v1/chat/completions", body);
        using var noKey = await anonymous.PostAsJsonAsync("/v1/chat/completions", body);
        var wrongError = (await wrongSecret.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        var missingError = (await noKey.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");

        Assert.Equal(HttpStatusCode.Unauthorized, wrongSecret.StatusCode);
        Assert.Equal("The app id or app secret in the Bearer key (appId.appSecret) is wrong.", wrongError.GetProperty("message").GetString());
        Assert.Equal("Send an end-user token or appId.appSecret as the Bearer key.", missingError.GetProperty("message").GetString());
    }

    [Fact]
    public async Task UnauthenticatedRequestTellsSdkNotToRetry()
    {
        using var anonymous = system.CreateClient();

        using var response = await anonymous.PostAsJsonAsync("/v1/chat/completions",
            new { messages = new object[] { new { role = "user", content = "x" } } });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(["false"], response.Headers.GetValues("x-should-retry"));
    }

    [Fact]
    public async Task ModelLookupReturnsListedModel()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "model-reader");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        var list = await user.GetFromJsonAsync<JsonElement>("/v1/models");
        using var response = await user.GetAsync("/v1/models/gpt-4o-mini");
        var model = await response.Content.ReadFromJsonAsync<JsonElement>();
        var listed = list.GetProperty("data")[0];

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("gpt-4o-mini", model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal(listed.GetProperty("created").GetInt64(), model.GetProperty("created").GetInt64());
        Assert.Equal(listed.GetProperty("owned_by").GetString(), model.GetProperty("owned_by").GetString());
    }

    [Fact]
    public async Task ModelLookupRejectsModelOutsideAllowList()
    {
        var app = await system.CreateAppAsync();
        using (var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken)))
        using (var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels = new[] { "gpt-4o" } }))
        {
            Assert.True(set.IsSuccessStatusCode);
        }

        using var caller = system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
        using var anonymous = system.CreateClient();

        using var allowed = await caller.GetAsync("/v1/models/gpt-4o");
        using var notAllowed = await caller.GetAsync("/v1/models/gpt-4o-mini");
        var error = (await notAllowed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("error");
        using var unauthenticated = await anonymous.GetAsync("/v1/models/gpt-4o");

        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, notAllowed.StatusCode);
        Assert.Equal("model_not_found", error.GetProperty("code").GetString());
        Assert.Contains("'gpt-4o-mini'", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Unauthorized, unauthenticated.StatusCode);
    }

    /// <summary>Creates an app with an active key and returns a client that calls with its credentials.</summary>
    private async Task<HttpClient> CreateCallerAsync(string keyPrefix, string[]? allowedModels = null)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, keyPrefix + Guid.NewGuid().ToString("N"));
        if (allowedModels is not null)
        {
            using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));
            using var set = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels });
            Assert.True(set.IsSuccessStatusCode);
        }

        return system.CreateClient(new AuthenticationHeaderValue("Bearer", $"{app.AppId}.{app.Secret}"));
    }
}
