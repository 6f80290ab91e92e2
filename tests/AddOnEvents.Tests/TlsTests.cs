using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Ingress;
using AddOnEvents.KeyWorker;
using AddOnEvents.PromptWorker;
using AddOnEvents.Tests.Fixtures;
using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>
/// TLS on every hop. The pipeline runs end to end over HTTPS, wss, AMQPS and TLS to the database. Certificates from the
/// wrong CA or for the wrong name fail with errors that name the problem, and certificate checks cannot be turned off
/// outside Development. The upstream can be plain HTTP only on loopback, and a redirect never takes the key elsewhere.
/// </summary>
public sealed class TlsTests(TlsFixture system) : IClassFixture<TlsFixture>
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    /// <summary>How long a service that cannot reach the broker keeps trying before its start fails.</summary>
    private static readonly TimeSpan BrokerStartTimeout = TimeSpan.FromSeconds(6);

    [Fact]
    public async Task PromptAnsweredOverTlsOnEveryHop()
    {
        var app = await system.CreateAppAsync("TLS");
        string key = "sk-tls-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        string token = await system.IssueUserTokenAsync(app, "tls-user");
        await using var client = await system.ConnectAsync(token);
        string prompt = "Is this encrypted? " + Guid.NewGuid().ToString("N");

        var requestId = await system.PostPromptAsync(token, prompt);
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("https", system.IngressUrl.Scheme);
        Assert.Equal("PromptCompleted", result.Kind);
        Assert.Equal("Echo: " + prompt, result.Text);
        var upstreamRequest = await system.Upstream.WaitForRequestAsync(r => r.LastUserMessage == prompt, Patience);
        Assert.Equal(key, upstreamRequest.BearerKey);
        Assert.Contains(system.Http.Responses, r => r.Contains("Strict-Transport-Security=max-age=31536000", StringComparison.Ordinal));
        var connections = await ReadBrokerConnectionsAsync();
        Assert.True(connections.Count >= 3, $"Expected a broker connection from each of the 3 services, found {connections.Count}.");
        Assert.All(connections, c => Assert.True(c.GetProperty("ssl").GetBoolean()));
        Assert.All(connections, c => Assert.Contains("CN=addonevents-service", c.GetProperty("peer_cert_subject").GetString(), StringComparison.Ordinal));
        Assert.NotEmpty(system.MongoTlsProxy.ClientCertificates);
        Assert.All(system.MongoTlsProxy.ClientCertificates, subject => Assert.Contains("CN=addonevents-service", subject, StringComparison.Ordinal));
    }

    [Fact]
    public async Task BrokerFromOtherCaFailsStart()
    {
        var settings = WithSettings(system.KeyWorkerSettings(), ("RabbitMq:CaCertificatePath", TlsEnvironment.PathOf("other-ca.crt")));

        string error = await StartFailureAsync(settings);

        Assert.Contains("The TLS connection to RabbitMQ at 127.0.0.1:", error, StringComparison.Ordinal);
        Assert.Contains("does not chain to the CA in RabbitMq:CaCertificatePath ('CN=AddOnEvents other CA", error, StringComparison.Ordinal);
        Assert.Contains("UntrustedRoot", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BrokerNameMismatchFailsStart()
    {
        var settings = WithSettings(system.KeyWorkerSettings(), ("RabbitMq:ServerName", "rabbitmq.example.com"));

        string error = await StartFailureAsync(settings);

        Assert.Contains("is not issued for the host name 'rabbitmq.example.com'", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task InvalidBrokerCertificatesRejectedOutsideDevelopment()
    {
        var settings = WithSettings(system.KeyWorkerSettings(), ("RabbitMq:AllowInvalidCertificates", "true"));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(() => BuildKeyWorker(settings, "Production")));

        Assert.Contains("RabbitMq:AllowInvalidCertificates is true, which is allowed only in the Development environment, not in Production",
            error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task InvalidBrokerCertificatesAllowedInDevelopment()
    {
        var settings = WithSettings(system.KeyWorkerSettings(),
            ("RabbitMq:AllowInvalidCertificates", "true"),
            ("RabbitMq:CaCertificatePath", TlsEnvironment.PathOf("other-ca.crt")));
        await using var app = BuildKeyWorker(settings, "Development");

        await app.StartAsync().WaitAsync(Patience);
        await app.StopAsync().WaitAsync(Patience);

        Assert.Contains(system.Logs.Entries, e => e.Contains("RabbitMq:AllowInvalidCertificates is on", StringComparison.Ordinal));
    }

    [Fact]
    public async Task DatabaseFromOtherCaFailsToConnect()
    {
        var settings = MongoTls.CreateSettings(system.MongoUri("other-ca.crt"), NullLogger.Instance);
        settings.ServerSelectionTimeout = TimeSpan.FromSeconds(6);
        var client = new MongoClient(settings);

        var error = await Assert.ThrowsAsync<TimeoutException>(
            () => client.GetDatabase(system.DatabaseName).RunCommandAsync<BsonDocument>(new BsonDocument("ping", 1)));

        Assert.Contains("The TLS connection to MongoDB failed certificate verification", error.Message, StringComparison.Ordinal);
        Assert.Contains("does not chain to the CA in tlsCAFile in Mongo:ConnectionString", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tlsInsecure=true")]
    [InlineData("tlsAllowInvalidCertificates=true")]
    [InlineData("tlsAllowInvalidHostnames=true")]
    public async Task InsecureDatabaseOptionRejectedOutsideDevelopment(string option)
    {
        var settings = WithSettings(system.PromptWorkerSettings(), ("Mongo:ConnectionString", system.MongoUri("ca.crt") + "&" + option));

        var error = await Assert.ThrowsAsync<OptionsValidationException>(
            () => StartAsync(() => PromptWorkerApp.Build([], b => system.Configure(b, settings))));

        Assert.Contains($"Mongo:ConnectionString has {option}", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://api.example.com/", false)]
    [InlineData("http://10.0.0.5:8000/", false)]
    [InlineData("https://api.example.com/", true)]
    [InlineData("http://localhost:11434/", true)]
    [InlineData("http://127.8.9.10:11434/", true)]
    [InlineData("http://[::1]:11434/", true)]
    public async Task UpstreamNeedsHttpsUnlessLoopback(string baseUrl, bool accepted)
    {
        var settings = WithSettings(system.PromptWorkerSettings(), ("Upstream:BaseUrl", baseUrl));
        WebApplication Build() => PromptWorkerApp.Build([], b => system.Configure(b, settings));

        if (accepted)
        {
            await using var app = Build();
            Assert.Equal(new Uri(baseUrl), app.Services.GetRequiredService<IOptions<UpstreamOptions>>().Value.BaseUrl);
        }
        else
        {
            var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(Build));
            Assert.Contains("Upstream:BaseUrl must use https://", error.Message, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(302)]
    [InlineData(307)]
    public async Task RedirectedPromptLeavesKeyHome(int status)
    {
        await using var elsewhere = await FakeUpstream.StartAsync();
        var app = await system.CreateAppAsync("Redirect");
        string key = "sk-redirect-" + Guid.NewGuid().ToString("N");
        await system.RegisterActiveKeyAsync(app, key);
        elsewhere.AcceptKey(key);
        string token = await system.IssueUserTokenAsync(app, "redirect-user");
        await using var client = await system.ConnectAsync(token);
        system.Upstream.Enqueue(RedirectTo(elsewhere, status, FakeUpstream.ChatCompletionsPath));

        var requestId = await system.PostPromptAsync(token, "Follow me");
        var result = await client.WaitForResultAsync(requestId, Patience);

        Assert.Equal("PromptFailed", result.Kind);
        Assert.Equal("upstream_invalid_response", result.Code);
        Assert.Empty(elsewhere.Requests);
    }

    [Fact]
    public async Task RedirectedKeyCheckLeavesKeyHome()
    {
        await using var elsewhere = await FakeUpstream.StartAsync();
        var app = await system.CreateAppAsync("Redirected check");
        string key = "sk-redirect-check-" + Guid.NewGuid().ToString("N");
        system.Upstream.AcceptKey(key);
        elsewhere.AcceptKey(key);
        system.Upstream.Enqueue(RedirectTo(elsewhere, 307, FakeUpstream.ModelsPath).ForModels());

        using (var response = await system.PutKeyAsync(app, key))
        {
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        }

        var status = await system.WaitForKeyStateAsync(app, "unverified");
        Assert.Equal("upstream_unavailable", status.GetProperty("reasonCode").GetString());
        Assert.Empty(elsewhere.Requests);
    }

    [Fact]
    public async Task PlainHttpRejectedOrRedirected()
    {
        var settings = WithSettings(system.IngressSettings(), ("Kestrel:Endpoints:Http:Url", "http://127.0.0.1:0"));
        await using var ingress = IngressApp.Build([], b => system.Configure(b, settings));
        await ingress.StartAsync().WaitAsync(Patience);
        var addresses = ingress.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses;
        var plain = new Uri(addresses.Single(a => a.StartsWith("http://", StringComparison.Ordinal)));
        var secure = new Uri(addresses.Single(a => a.StartsWith("https://", StringComparison.Ordinal)));
        using var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) { BaseAddress = plain, Timeout = Patience };
        using var promptRequest = new HttpRequestMessage(HttpMethod.Post, "/api/prompts")
        {
            Headers = { Authorization = new AuthenticationHeaderValue("Bearer", "not-a-real-token") },
            Content = JsonContent.Create(new { prompt = "over plain HTTP" }),
        };

        using var prompt = await http.SendAsync(promptRequest);
        using var page = await http.GetAsync("/console.html");
        using var health = await http.GetAsync("/health/live");

        Assert.Equal(HttpStatusCode.BadRequest, prompt.StatusCode);
        var body = await prompt.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("https_required", body.GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.PermanentRedirect, page.StatusCode);
        Assert.Equal(new Uri(secure, "/console.html"), page.Headers.Location);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        await ingress.StopAsync().WaitAsync(Patience);
    }

    private static ScriptedResponse RedirectTo(FakeUpstream target, int status, string path) =>
        ScriptedResponse.Raw(status, "", "text/plain") with
        {
            // Another host name for the same machine, as a redirect to another server would be.
            Headers = new Dictionary<string, string> { ["Location"] = $"http://localhost:{target.BaseUrl.Port}{path}" },
        };

    private static Dictionary<string, string?> WithSettings(Dictionary<string, string?> settings, params (string Key, string Value)[] changes)
    {
        foreach (var (key, value) in changes)
        {
            settings[key] = value;
        }

        return settings;
    }

    private WebApplication BuildKeyWorker(Dictionary<string, string?> settings, string environment) =>
        KeyWorkerApp.Build(["--environment", environment], builder =>
        {
            system.Configure(builder, settings);
            builder.Services.PostConfigure<MassTransitHostOptions>(options => options.StartTimeout = BrokerStartTimeout);
        });

    /// <summary>
    /// Builds and starts a service, then stops it. A setting that fails validation can fail the build already, because
    /// mapping the health checks creates the bus, which reads the broker settings.
    /// </summary>
    private static async Task StartAsync(Func<WebApplication> build)
    {
        await using var app = build();
        await app.StartAsync().WaitAsync(Patience);
        await app.StopAsync().WaitAsync(Patience);
    }

    /// <summary>Starts KeyWorker, expects the start to fail, and returns the messages of the exception and its inner exceptions.</summary>
    private async Task<string> StartFailureAsync(Dictionary<string, string?> settings)
    {
        var error = await Assert.ThrowsAnyAsync<Exception>(() => StartAsync(() => BuildKeyWorker(settings, "Production")));
        var messages = new List<string>();
        for (Exception? e = error; e is not null; e = e.InnerException)
        {
            messages.Add(e.Message);
        }

        return string.Join(" | ", messages);
    }

    private static async Task<List<JsonElement>> ReadBrokerConnectionsAsync()
    {
        using var management = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{TlsEnvironment.RabbitMqTlsManagementPort}/") };
        management.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("guest:guest"u8.ToArray()));
        using var document = JsonDocument.Parse(await management.GetStringAsync("api/connections"));
        return document.RootElement.EnumerateArray().Select(c => c.Clone()).ToList();
    }
}
