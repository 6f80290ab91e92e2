using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Tests;

/// <summary>Bad input and bad credentials get a status, a stable code and a message, and nothing is published.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class ApiInputTests(SystemFixture system)
{
    [Theory]
    [InlineData("sk-short", "invalid_key_format")]
    [InlineData("sk-with inner-space-0123456789abcdef", "invalid_key_format")]
    [InlineData("sk-zero\u200Bwidth-0123456789abcdef0123", "invalid_key_format")]
    [InlineData("sk-control\u0007-0123456789abcdef0123", "invalid_key_format")]
    [InlineData("sk-proj-quote\"0123456789abcdef0123", "invalid_key_format")]
    [InlineData("sk-proj-comma,0123456789abcdef0123", "invalid_key_format")]
    [InlineData("   ", "invalid_key_format")]
    public async Task MalformedKeyRejectedWithoutPublishing(string apiKey, string expectedCode)
    {
        var app = await system.CreateAppAsync();

        using var response = await system.PutKeyAsync(app, apiKey);
        string body = await response.Content.ReadAsStringAsync();
        var versions = await system.ReadCollectionsAsync("keyVersions");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(expectedCode, JsonDocument.Parse(body).RootElement.GetProperty("code").GetString());
        Assert.DoesNotContain(apiKey.Trim().Length > 0 ? apiKey.Trim() : "\u0000", body, StringComparison.Ordinal);
        Assert.DoesNotContain(versions, d => d["_id"] == app.AppId);
    }

    [Fact]
    public async Task WebhookSecretStaysUntilRotated()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));
        string url = $"http://127.0.0.1:9/hooks/{app.AppId}";

        string? first = await SaveWebhookAsync(developer, app, new { url });
        string? again = await SaveWebhookAsync(developer, app, new { url = url + "/moved" });
        string? rotated = await SaveWebhookAsync(developer, app, new { url, rotateSecret = true });

        Assert.StartsWith("whsec_", first, StringComparison.Ordinal);
        Assert.Equal(first, again);
        Assert.NotEqual(first, rotated);
    }

    private static async Task<string?> SaveWebhookAsync(HttpClient developer, TestApp app, object body)
    {
        using var response = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/webhook", body);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("signingSecret").GetString();
    }

    [Fact]
    public async Task SurroundingWhitespaceIsTrimmed()
    {
        var app = await system.CreateAppAsync();
        string key = "sk-trimmed-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);

        using var response = await system.PutKeyAsync(app, "  " + key + "\n");
        var status = await system.WaitForKeyStateAsync(app, "active");

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("sk-..." + key[^4..], status.GetProperty("hint").GetString());
    }

    [Fact]
    public async Task InvalidJsonBodyGetsInvalidRequest()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var response = await developer.PutAsync($"/api/apps/{app.AppId}/openai-key",
            new StringContent("{\"apiKey\": \"sk-abc", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", await CodeOf(response));
    }

    [Fact]
    public async Task OtherAppsKeyIsForbidden()
    {
        var appA = await system.CreateAppAsync("A");
        var appB = await system.CreateAppAsync("B");
        using var developerB = system.CreateClient(SystemFixture.Basic(appB));

        using var read = await developerB.GetAsync($"/api/apps/{appA.AppId}/openai-key");
        using var write = await developerB.PutAsJsonAsync($"/api/apps/{appA.AppId}/openai-key", new { apiKey = "sk-" + new string('x', 40) });
        using var delete = await developerB.DeleteAsync($"/api/apps/{appA.AppId}/openai-key");
        using var token = await developerB.PostAsJsonAsync($"/api/apps/{appA.AppId}/user-tokens", new { userId = "u" });

        Assert.Equal(HttpStatusCode.Forbidden, read.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, delete.StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, token.StatusCode);
        Assert.Equal("forbidden", await CodeOf(read));
    }

    [Fact]
    public async Task WrongSecretIsUnauthorized()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app with { Secret = app.Secret + "x" }));

        using var response = await developer.GetAsync($"/api/apps/{app.AppId}/openai-key");

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("unauthorized", await CodeOf(response));
    }

    [Fact]
    public async Task MissingAdminTokenIsUnauthorized()
    {
        using var anonymous = system.CreateClient();

        using var response = await anonymous.PostAsJsonAsync("/api/admin/apps", new { name = "x" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task TamperedUserTokenIsRejected()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "user");
        string tampered = token[..^4] + (token[^4] == 'A' ? "BBBB" : "AAAA");
        using var user = system.CreateClient(SystemFixture.Bearer(tampered));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });
        var hubFailure = await Record.ExceptionAsync(() => system.ConnectAsync(tampered));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("unauthorized", await CodeOf(response));
        Assert.NotNull(hubFailure);
    }

    [Fact]
    public async Task AppSecretIsNotAUserToken()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(app.Secret));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "hi" });

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task OverlongPromptGets413()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "user")));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = new string('a', 16_001) });

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("prompt_too_long", await CodeOf(response));
    }

    [Fact]
    public async Task EmptyPromptGets400()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "user")));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt = "  " });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", await CodeOf(response));
    }

    [Fact]
    public async Task MissingPromptNamesBothForms()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "user")));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { stream = false });
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", body.GetProperty("code").GetString());
        Assert.Equal("Send prompt with a free-form question, or action with the text it works on.", body.GetProperty("message").GetString());
    }

    [Fact]
    public async Task HealthEndpointsAnswer()
    {
        using var anonymous = system.CreateClient();

        using var live = await anonymous.GetAsync("/health/live");
        using var ready = await anonymous.GetAsync("/health/ready");
        var readiness = await ready.Content.ReadFromJsonAsync<JsonElement>();
        var checks = readiness.GetProperty("checks").EnumerateObject().ToList();

        Assert.Equal(HttpStatusCode.OK, live.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("Healthy", readiness.GetProperty("status").GetString());
        Assert.NotEmpty(checks);
        Assert.All(checks, check => Assert.Equal("Healthy", check.Value.GetString()));
    }

    [Fact]
    public async Task UnknownApiPathGetsJsonNotFound()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var api = await developer.GetAsync($"/api/apps/{app.AppId}/no-such-thing");
        using var compatible = await developer.GetAsync("/v1/no-such-thing");

        await AssertBothShapesAsync(api, compatible, HttpStatusCode.NotFound, "not_found");
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("1.5")]
    [InlineData("0")]
    [InlineData("1001")]
    [InlineData("99999999999")]
    public async Task WrongQueryValueIsNamed(string limit)
    {
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var response = await admin.GetAsync("/api/admin/apps?limit=" + limit);
        var error = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.Equal("limit must be a whole number between 1 and 1000.", error.GetProperty("message").GetString());
    }

    [Fact]
    public async Task WrongMethodGetsJsonErrorWithAllowedMethods()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app));

        using var response = await developer.PatchAsync($"/api/apps/{app.AppId}/openai-key", new StringContent("{}", Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("method_not_allowed", body.GetProperty("code").GetString());
        Assert.Contains("PUT", body.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task OversizedBodyIsRefusedBeforeItIsRead()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "flooder");
        using var user = system.CreateClient(SystemFixture.Bearer(token));
        // A short prompt with a padding field above the 112 KB cap: only the body cap can refuse it. It stays small
        // enough for the socket buffers to take it whole, so the client never writes into a connection the server
        // closed after its early 413.
        string huge = "{\"prompt\":\"hi\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"padding\":\"" + new string('a', 150_000) + "\"}";

        using var prompts = await user.PostAsync("/api/prompts", new StringContent(huge, Encoding.UTF8, "application/json"));
        using var compatible = await user.PostAsync("/v1/chat/completions", new StringContent(huge, Encoding.UTF8, "application/json"));

        await AssertBothShapesAsync(prompts, compatible, HttpStatusCode.RequestEntityTooLarge, "prompt_too_long");
    }

    [Theory]
    [InlineData("ttlSeconds", 29, "ttlSeconds must be a whole number of seconds between 30 and 3600.")]
    [InlineData("requestsPerMinute", 0, "requestsPerMinute must be a whole number from 1 to 2147483647.")]
    [InlineData("monthlyTokenAllowance", -1, "monthlyTokenAllowance must be a whole number of tokens from 0 to 9223372036854775807.")]
    [InlineData("allowanceThresholdPercent", 150, "allowanceThresholdPercent must be a whole number from 1 to 100.")]
    public async Task InvalidTokenLimitNamesOnlyItsField(string field, int value, string message)
    {
        var app = await system.CreateAppAsync();
        using var host = system.CreateClient(SystemFixture.Basic(app));

        using var response = await host.PostAsync($"/api/apps/{app.AppId}/user-tokens",
            new StringContent($$"""{"userId":"limits","{{field}}":{{value}}}""", Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", body.GetProperty("code").GetString());
        Assert.Equal(message, body.GetProperty("message").GetString());
    }

    [Fact]
    public async Task WrongFieldTypeNamesTheField()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "typo");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsync("/api/prompts", new StringContent("{\"prompt\": 123}", Encoding.UTF8, "application/json"));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("$.prompt", body.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("text/plain", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 415)]
    [InlineData("application/json", "{\"n\":3,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400)]
    [InlineData("application/json", "{\"tools\":[{\"type\":\"function\"}],\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", 400)]
    public async Task UnsupportedChatRequestGetsOpenAIError(string contentType, string json, int status)
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "sdk");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, contentType));
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("invalid_request", body.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task UnknownFieldNameIsNotEchoed()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "paster");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsync("/api/prompts", new StringContent("{\"zz9canary9zz\": {\"a\": [1, 2", Encoding.UTF8, "application/json"));
        string body = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.DoesNotContain("zz9canary9zz", body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WrongAppSecretIsNamedAsWrong()
    {
        var app = await system.CreateAppAsync();
        using var developer = system.CreateClient(SystemFixture.Basic(app with { Secret = "aes_wrong" }));
        using var anonymous = system.CreateClient();

        using var wrong = await developer.GetAsync($"/api/apps/{app.AppId}/openai-key");
        using var missing = await anonymous.GetAsync($"/api/apps/{app.AppId}/openai-key");
        var wrongBody = await wrong.Content.ReadFromJsonAsync<JsonElement>();
        var missingBody = await missing.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal("The app id or app secret is wrong.", wrongBody.GetProperty("message").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized, missing.StatusCode);
        Assert.Contains("Send the app id and app secret", missingBody.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("gpt 4o")]
    [InlineData("a\nb")]
    [InlineData("sk-proj-pasted0key0instead0of0a0model")]
    [InlineData("gpt-4o\n")]
    public async Task MalformedAllowedModelIsRejected(string model)
    {
        var app = await system.CreateAppAsync();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var response = await admin.PutAsJsonAsync($"/api/admin/apps/{app.AppId}/limits", new { allowedModels = new[] { "gpt-4o-mini", model } });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", await CodeOf(response));
    }

    [Theory]
    [InlineData("/api/prompts")]
    [InlineData("/v1/chat/completions")]
    public async Task KeyPastedAsModelIsRejectedUnquoted(string path)
    {
        const string pasted = "sk-proj-zz9pasted9key9zz";
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-model-check-" + Guid.NewGuid().ToString("N"));
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "pasting-user")));

        using var response = path == "/api/prompts"
            ? await user.PostAsJsonAsync(path, new { prompt = "hi", model = pasted })
            : await user.PostAsJsonAsync(path, new { model = pasted, messages = new[] { new { role = "user", content = "hi" } } });
        string body = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.DoesNotContain("zz9pasted9key9zz", body, StringComparison.Ordinal);
        Assert.DoesNotContain(system.Upstream.Requests, r => r.Model == pasted);
    }

    [Fact]
    public async Task ProtectiveHeadersAreSet()
    {
        using var anonymous = system.CreateClient();
        using var admin = system.CreateClient(SystemFixture.Bearer(system.Secrets.AdminToken));

        using var console = await anonymous.GetAsync("/console.html");
        using var created = await admin.PostAsJsonAsync("/api/admin/apps", new { name = "Headers" });

        Assert.Equal(HttpStatusCode.OK, console.StatusCode);
        Assert.Equal("DENY", string.Join(",", console.Headers.GetValues("X-Frame-Options")));
        Assert.Equal("frame-ancestors 'none'", string.Join(",", console.Headers.GetValues("Content-Security-Policy")));
        Assert.Equal("nosniff", string.Join(",", console.Headers.GetValues("X-Content-Type-Options")));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.True(created.Headers.CacheControl?.NoStore);
    }

    [Fact]
    public async Task PromptAndActionTogetherAreRejected()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "both");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/api/prompts", new { action = "shorten", text = "some text", prompt = "ignored?" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", await CodeOf(response));
    }

    [Fact]
    public async Task NegativeMaxTokensNamesTheOpenAIField()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "sdk-tokens");
        using var user = system.CreateClient(SystemFixture.Bearer(token));

        using var response = await user.PostAsJsonAsync("/v1/chat/completions",
            new { max_tokens = -5, messages = new object[] { new { role = "user", content = "hi" } } });
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("max_tokens must be between 1 and", body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(nameof(Ingress))]
    [InlineData(nameof(KeyWorker))]
    [InlineData(nameof(PromptWorker))]
    public void BusSendsNoUsageTelemetry(string service)
    {
        var options = system.ServicesOf(service).GetRequiredService<IOptions<MassTransit.UsageTelemetryOptions>>().Value;

        Assert.False(options.Enabled);
    }

    /// <summary>Checks one error from the product's API and the same error in OpenAI's shape from <c>/v1</c>.</summary>
    private static async Task AssertBothShapesAsync(HttpResponseMessage api, HttpResponseMessage compatible, HttpStatusCode status, string code)
    {
        var compatibleBody = await compatible.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(status, api.StatusCode);
        Assert.Equal(code, await CodeOf(api));
        Assert.Equal(status, compatible.StatusCode);
        Assert.Equal(code, compatibleBody.GetProperty("error").GetProperty("code").GetString());
    }

    private static async Task<string?> CodeOf(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString();
    [Theory]
    [InlineData("/api/prompts", "POST")]
    [InlineData("/hubs/addon/negotiate?negotiateVersion=1", "POST")]
    [InlineData("/api/me/usage", "GET")]
    [InlineData("/v1/chat/completions", "POST")]
    public async Task PreflightFromHostOriginIsAllowed(string path, string method)
    {
        using var response = await PreflightAsync(path, method, SystemFixture.HostOrigin);

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal(SystemFixture.HostOrigin, Assert.Single(response.Headers.GetValues("Access-Control-Allow-Origin")));
        Assert.False(response.Headers.Contains("Access-Control-Allow-Credentials"));
    }

    [Theory]
    [InlineData("/api/prompts", "http://elsewhere.test")]
    [InlineData("/api/admin/apps", SystemFixture.HostOrigin)]
    [InlineData("/api/apps/app_x/openai-key", SystemFixture.HostOrigin)]
    public async Task PreflightIsNotAllowedElsewhere(string path, string origin)
    {
        using var response = await PreflightAsync(path, "POST", origin);

        Assert.False(response.Headers.Contains("Access-Control-Allow-Origin"));
    }

    [Fact]
    public async Task HubRejectsPagesOfOtherOrigins()
    {
        var app = await system.CreateAppAsync();
        string token = await system.IssueUserTokenAsync(app, "origin-check");
        using var anonymous = system.CreateClient();

        using var foreign = await NegotiateAsync(anonymous, "http://elsewhere.test");
        using var listed = await NegotiateAsync(anonymous, SystemFixture.HostOrigin);
        using var own = await NegotiateAsync(anonymous, system.IngressUrl.GetLeftPart(UriPartial.Authority));
        using var socket = new System.Net.WebSockets.ClientWebSocket();
        socket.Options.SetRequestHeader("Origin", "http://elsewhere.test");
        var address = new UriBuilder(system.IngressUrl) { Scheme = "ws", Path = "/hubs/addon", Query = "access_token=" + token }.Uri;
        var upgrade = await Record.ExceptionAsync(() => socket.ConnectAsync(address, CancellationToken.None).WaitAsync(SystemFixture.Patience));

        Assert.Equal(HttpStatusCode.Forbidden, foreign.StatusCode);
        Assert.Equal("forbidden", (await foreign.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.Unauthorized, listed.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, own.StatusCode);
        Assert.IsType<System.Net.WebSockets.WebSocketException>(upgrade);
    }

    private static async Task<HttpResponseMessage> NegotiateAsync(HttpClient client, string origin)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/hubs/addon/negotiate?negotiateVersion=1");
        request.Headers.Add("Origin", origin);
        return await client.SendAsync(request);
    }

    [Fact]
    public async Task CrossOriginPromptExposesRetryAfter()
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "cross-origin")));
        using var request = new HttpRequestMessage(HttpMethod.Post, "/api/prompts") { Content = JsonContent.Create(new { prompt = "hello" }) };
        request.Headers.Add("Origin", SystemFixture.HostOrigin);

        using var response = await user.SendAsync(request);

        Assert.Equal(SystemFixture.HostOrigin, Assert.Single(response.Headers.GetValues("Access-Control-Allow-Origin")));
        Assert.Contains("Retry-After", string.Join(",", response.Headers.GetValues("Access-Control-Expose-Headers")), StringComparison.OrdinalIgnoreCase);
    }

    [Theory]
    [InlineData("https://app.example.com/path")]
    [InlineData("app.example.com")]
    [InlineData("ftp://app.example.com")]
    [InlineData("https://user@app.example.com")]
    public void InvalidAllowedOriginIsRejected(string origin)
    {
        var error = Assert.Throws<InvalidOperationException>(() => BrowserOrigins.Parse([origin]));

        Assert.Contains(origin, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AllowedOriginIsNormalized()
    {
        Assert.Equal(["https://app.example.com", "http://127.0.0.1:8080", "*"], BrowserOrigins.Parse(["https://App.Example.com/", " http://127.0.0.1:8080 ", "*", ""]));
    }

    private async Task<HttpResponseMessage> PreflightAsync(string path, string method, string origin)
    {
        using var anonymous = system.CreateClient();
        using var request = new HttpRequestMessage(HttpMethod.Options, path);
        request.Headers.Add("Origin", origin);
        request.Headers.Add("Access-Control-Request-Method", method);
        request.Headers.Add("Access-Control-Request-Headers", "authorization,content-type");
        return await anonymous.SendAsync(request);
    }

}
