using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using AddOnEvents.Common.Storage;
using AddOnEvents.Ingress;
using AddOnEvents.KeyWorker;
using AddOnEvents.PromptWorker;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>An app created through the admin API, with the credentials the developer received.</summary>
public sealed record TestApp(string AppId, string Secret);

/// <summary>
/// The whole system for end-to-end tests: Ingress, KeyWorker and PromptWorker on real sockets, on the RabbitMQ
/// node and jongodb that test.sh started, in a database of their own, with a fake OpenAI upstream. Every log
/// line, broker message and HTTP response is captured for leak scans.
/// </summary>
public class SystemFixture : IAsyncLifetime
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private readonly Dictionary<string, WebApplication> _services = [];

    public TestSecrets Secrets { get; } = new();

    public string DatabaseName { get; } = "t" + Guid.NewGuid().ToString("N")[..16];

    public FakeUpstream Upstream { get; private set; } = null!;

    public BrokerTrace Broker { get; private set; } = null!;

    public HttpCapture Http { get; } = new();

    public LogCapture Logs { get; } = new();

    public Uri IngressUrl { get; private set; } = null!;

    public IMongoDatabase Database { get; private set; } = null!;

    /// <summary>The connection string the services use; a subclass may route it through a <see cref="TcpProxy"/>.</summary>
    protected virtual string ServiceMongoUri => TestEnvironment.MongoUri;

    public virtual async Task InitializeAsync()
    {
        Upstream = await FakeUpstream.StartAsync();
        Broker = await BrokerTrace.StartAsync();
        Database = new MongoClient(TestEnvironment.MongoUri).GetDatabase(DatabaseName);

        await StartServiceAsync(nameof(KeyWorker));
        await StartServiceAsync(nameof(PromptWorker));
        IngressUrl = new Uri(await StartServiceAsync(nameof(Ingress)));
    }

    public virtual async Task DisposeAsync()
    {
        foreach (string name in _services.Keys.Reverse().ToList())
        {
            await StopServiceAsync(name);
        }

        await Broker.DisposeAsync();
        await Upstream.DisposeAsync();
    }

    /// <summary>
    /// Builds and starts one service by project name and returns its HTTP address. An extra Ingress instance (a name
    /// such as Ingress2) applies <paramref name="overrides"/> over the suite's settings. The other services ignore them.
    /// </summary>
    public async Task<string> StartServiceAsync(string name, IReadOnlyDictionary<string, string?>? overrides = null)
    {
        var app = name switch
        {
            nameof(KeyWorker) => KeyWorkerApp.Build([], b => Configure(b, KeyWorkerSettings())),
            nameof(PromptWorker) => PromptWorkerApp.Build([], b => Configure(b, PromptWorkerSettings())),
            nameof(Ingress) => IngressApp.Build([], b =>
            {
                Configure(b, IngressSettings());
                ServePages(b);
            }),
            _ when name.StartsWith(nameof(Ingress), StringComparison.Ordinal) => IngressApp.Build([], b =>
            {
                Configure(b, new Dictionary<string, string?>(IngressSettings()) { ["Ingress:InstanceId"] = name.ToLowerInvariant() });
                b.Configuration.AddInMemoryCollection(overrides ?? new Dictionary<string, string?>());
            }),
            _ when name.StartsWith(nameof(PromptWorker), StringComparison.Ordinal) =>
                PromptWorkerApp.Build([], b => Configure(b, PromptWorkerSettings())),
            _ => throw new ArgumentException($"No service named {name}.", nameof(name)),
        };
        _services[name] = app;
        await app.StartAsync();
        return app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
    }

    /// <summary>Returns the services of a running service, to reach its bus or stores.</summary>
    public IServiceProvider ServicesOf(string name) => _services[name].Services;

    /// <summary>
    /// Stops one service. With <paramref name="crash"/> the stop is cancelled at once, so messages in progress are
    /// abandoned unacknowledged, as when the process dies.
    /// </summary>
    public async Task StopServiceAsync(string name, bool crash = false)
    {
        if (!_services.Remove(name, out var app))
        {
            return;
        }

        using var cancellation = new CancellationTokenSource();
        if (crash)
        {
            await cancellation.CancelAsync();
        }

        try
        {
            await app.StopAsync(cancellation.Token);
        }
        catch (OperationCanceledException) when (crash)
        {
            // An abandoned stop is what a crash looks like from the broker's side.
        }

        await app.DisposeAsync();
    }

    public virtual Dictionary<string, string?> CommonSettings() => new()
    {
        ["RabbitMq:Host"] = "127.0.0.1",
        ["RabbitMq:Port"] = TestEnvironment.RabbitMqPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["RabbitMq:VirtualHost"] = Broker.VirtualHost,
        ["RabbitMq:Username"] = "guest",
        ["RabbitMq:Password"] = "guest",
        ["Mongo:ConnectionString"] = ServiceMongoUri,
        ["Mongo:Database"] = DatabaseName,
        ["Logging:LogLevel:Default"] = "Trace",
        ["Upstream:BaseUrl"] = Upstream.BaseUrl.ToString(),
    };

    public virtual Dictionary<string, string?> KeyWorkerSettings() => new(CommonSettings())
    {
        ["Sealing:KeyId"] = Secrets.SealingKeyId,
        ["Sealing:PrivateKey"] = Secrets.SealingPrivateKey,
        ["MasterKeys:CurrentKeyId"] = "mk1",
        ["MasterKeys:Keys:mk1"] = Secrets.MasterKey1,
        ["Fingerprint:Key"] = Secrets.FingerprintKey,

        // Re-checks of unverified keys after 1, 2 and 4 s, so the tests see them end within seconds.
        ["KeyWorker:RecheckAttempts"] = "3",
        ["KeyWorker:RecheckDelaySeconds"] = "1",
        ["KeyWorker:RecheckPollSeconds"] = "1",
    };

    public virtual Dictionary<string, string?> PromptWorkerSettings() => new(CommonSettings())
    {
        ["MasterKeys:CurrentKeyId"] = "mk1",
        ["MasterKeys:Keys:mk1"] = Secrets.MasterKey1,
    };

    public virtual Dictionary<string, string?> IngressSettings() => new(CommonSettings())
    {
        // The suite talks plain HTTP to Ingress; TlsFixture serves HTTPS and turns this back on.
        ["Ingress:RequireHttps"] = "false",
        ["Sealing:KeyId"] = Secrets.SealingKeyId,
        ["Sealing:PublicKey"] = Secrets.SealingPublicKey,
        ["Auth:AdminToken"] = Secrets.AdminToken,
        ["Auth:TokenSigningKey"] = Secrets.TokenSigningKey,

        // The webhook receivers of the tests listen on loopback.
        ["Webhooks:AllowPrivateAddresses"] = "true",

        ["Ingress:AllowedOrigins:0"] = HostOrigin,
    };

    /// <summary>An origin of host pages that Ingress allows to call its end-user endpoints in the tests.</summary>
    public const string HostOrigin = "http://host.test";

    /// <summary>Gives a service builder the test's settings and log capture; the settings win over every other source.</summary>
    public void Configure(WebApplicationBuilder builder, IDictionary<string, string?> settings)
    {
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Configuration.AddInMemoryCollection(settings);
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Trace);
        builder.Logging.AddProvider(Logs);
    }

    /// <summary>
    /// Serves Ingress's pages from src/Ingress/wwwroot, through the static web assets manifest that the build copies
    /// next to the tests; a run from the project folder (run.sh) finds them through its content root instead.
    /// </summary>
    private static void ServePages(WebApplicationBuilder builder)
    {
        string manifest = Path.Combine(AppContext.BaseDirectory, "AddOnEvents.Ingress.staticwebassets.runtime.json");
        builder.WebHost.UseSetting(WebHostDefaults.StaticWebAssetsKey, manifest);
        builder.WebHost.UseStaticWebAssets();
    }

    /// <summary>Returns an HTTP client for Ingress whose responses are captured.</summary>
    public HttpClient CreateClient(AuthenticationHeaderValue? authorization = null, Uri? baseAddress = null)
    {
        var client = new HttpClient(Http.CreateHandler(new SocketsHttpHandler())) { BaseAddress = baseAddress ?? IngressUrl, Timeout = Patience };
        client.DefaultRequestHeaders.Authorization = authorization;
        return client;
    }

    public static AuthenticationHeaderValue Basic(TestApp app) =>
        new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{app.AppId}:{app.Secret}")));

    public static AuthenticationHeaderValue Bearer(string token) => new("Bearer", token);

    public async Task<TestApp> CreateAppAsync(string name = "Test app")
    {
        using var admin = CreateClient(Bearer(Secrets.AdminToken));
        using var response = await admin.PostAsJsonAsync("/api/admin/apps", new { name });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        return new TestApp(body.GetProperty("appId").GetString()!, body.GetProperty("appSecret").GetString()!);
    }

    public async Task<HttpResponseMessage> PutKeyAsync(TestApp app, string apiKey)
    {
        using var developer = CreateClient(Basic(app));
        return await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/openai-key", new { apiKey });
    }

    /// <summary>Polls the key status until it reaches <paramref name="state"/>; returns the last status body.</summary>
    public async Task<JsonElement> WaitForKeyStateAsync(TestApp app, string state)
    {
        using var developer = CreateClient(Basic(app));
        var deadline = DateTime.UtcNow + Patience;
        string last = "";
        while (DateTime.UtcNow < deadline)
        {
            using var response = await developer.GetAsync($"/api/apps/{app.AppId}/openai-key");
            last = await response.Content.ReadAsStringAsync();
            if (response.IsSuccessStatusCode)
            {
                var body = JsonDocument.Parse(last).RootElement;
                if (body.GetProperty("state").GetString() == state)
                {
                    return body.Clone();
                }
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"The key of {app.AppId} did not reach '{state}' within {Patience}; last status: {last}");
    }

    /// <summary>Registers a key the fake upstream accepts, waits until it is active, and switches the add-on on.</summary>
    public async Task RegisterActiveKeyAsync(TestApp app, string apiKey)
    {
        Upstream.AcceptKey(apiKey);
        using var response = await PutKeyAsync(app, apiKey);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        await WaitForKeyStateAsync(app, "active");
        await SetAddonActiveAsync(app, true);
    }

    public async Task SetAddonActiveAsync(TestApp app, bool active)
    {
        using var developer = CreateClient(Basic(app));
        using var response = await developer.PutAsJsonAsync($"/api/apps/{app.AppId}/addon", new { active });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    public async Task<string> IssueUserTokenAsync(TestApp app, string userId)
    {
        using var host = CreateClient(Basic(app));
        using var response = await host.PostAsJsonAsync($"/api/apps/{app.AppId}/user-tokens", new { userId });
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("token").GetString()!;
    }

    /// <summary>Polls the condition until it holds, or throws after <see cref="Patience"/>.</summary>
    public static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("The condition did not hold in time.");
            }

            await Task.Delay(20);
        }
    }

    public Task<AddOnClient> ConnectAsync(string token) => AddOnClient.ConnectAsync(IngressUrl, token, Http);

    /// <summary>Posts a prompt with an end-user token; returns the request id of the 202.</summary>
    public async Task<Guid> PostPromptAsync(string token, string prompt, bool stream = true)
    {
        using var user = CreateClient(Bearer(token));
        using var response = await user.PostAsJsonAsync("/api/prompts", new { prompt, stream });
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("requestId").GetGuid();
    }

    /// <summary>Returns every document of the given collections, with every part of a collection stored in parts.</summary>
    public Task<List<BsonDocument>> ReadCollectionsAsync(params string[] names) => FindAsync(FilterDefinition<BsonDocument>.Empty, names);

    /// <summary>Returns the documents that match in the given collections, with every part of a collection stored in parts.</summary>
    public async Task<List<BsonDocument>> FindAsync(FilterDefinition<BsonDocument> filter, params string[] names)
    {
        // NOTE: jongodb has no listCollections, so the collections are named by the caller.
        var documents = new List<BsonDocument>();
        foreach (string name in names.SelectMany(PartsOf))
        {
            documents.AddRange(await Database.GetCollection<BsonDocument>(name).Find(filter).ToListAsync());
        }

        return documents;
    }

    private static IEnumerable<string> PartsOf(string name) =>
        name is PromptResultStore.CollectionName or UsageStore.CollectionName or RateCounterStore.CollectionName
            ? CollectionParts.NamesOf(name)
            : [name];

}

[CollectionDefinition(Name)]
public sealed class SystemCollectionDefinition : ICollectionFixture<SystemFixture>
{
    public const string Name = "system";
}
