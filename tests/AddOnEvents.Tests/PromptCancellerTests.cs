using System.Security.Claims;
using System.Security.Cryptography;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Tests.Fixtures;
using MassTransit;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MongoDB.Driver;
using Claim = System.Security.Claims.Claim;

namespace AddOnEvents.Tests;

/// <summary>
/// A cancel counts as sent when it was stored or its broadcast was confirmed, because either one stops the request.
/// When neither worked, the caller gets 503 so that it sends the cancel again.
/// </summary>
public sealed class PromptCancellerTests : IAsyncLifetime, IDisposable
{
    // Port 1 on loopback has no listener, so every MongoDB write fails once server selection gives up, and no broker
    // ever confirms a publish.
    private const string UnreachableMongoUri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500";

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(15);

    private static readonly UserTokens Tokens = new(
        Options.Create(new AuthOptions { TokenSigningKey = Convert.ToBase64String(RandomNumberGenerator.GetBytes(48)) }), TimeProvider.System);

    private readonly IBusControl _unreachableBroker = Bus.Factory.CreateUsingRabbitMq(rabbit => rabbit.Host("127.0.0.1", 1, "/", host =>
    {
        host.Username("guest");
        host.Password("guest");
        host.RequestedConnectionTimeout(TimeSpan.FromMilliseconds(500));
    }));

    private readonly IBusControl _inMemoryBroker = Bus.Factory.CreateUsingInMemory(_ => { });
    private readonly LogCapture _logs = new();
    private readonly LoggerFactory _loggers;

    public PromptCancellerTests()
    {
        MongoSetup.RegisterConventions();
        _loggers = new LoggerFactory([_logs]);
    }

    public Task InitializeAsync() => _inMemoryBroker.StartAsync();

    public Task DisposeAsync() => _inMemoryBroker.StopAsync();

    public void Dispose()
    {
        _loggers.Dispose();
        _logs.Dispose();
    }

    [Fact]
    public async Task LostCancelIsUnavailable()
    {
        using var canceller = Canceller(new MongoClient(UnreachableMongoUri).GetDatabase("unreachable"), _unreachableBroker);
        var requestId = Guid.NewGuid();

        var outcome = await canceller.CancelAsync(User(), requestId, default).WaitAsync(Patience);

        Assert.Equal(StatusCodes.Status503ServiceUnavailable, outcome.Status);
        Assert.Equal(ErrorCodes.ServiceUnavailable, outcome.Error?.Code);
        Assert.Equal(ApiErrors.OutageRetryAfterSeconds, outcome.RetryAfterSeconds);
        Assert.Contains(_logs.Entries, entry => entry.StartsWith("Warning", StringComparison.Ordinal) && entry.Contains("[1020]", StringComparison.Ordinal)
            && entry.Contains(requestId.ToString(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task StoredCancelIsSentWithoutBroker()
    {
        var database = new MongoClient(TestEnvironment.MongoUri).GetDatabase("cancel" + Guid.NewGuid().ToString("N")[..12]);
        using var canceller = Canceller(database, _unreachableBroker);
        var requestId = Guid.NewGuid();

        var outcome = await canceller.CancelAsync(User(), requestId, default).WaitAsync(Patience);

        Assert.Equal(StatusCodes.Status202Accepted, outcome.Status);
        Assert.Null(outcome.Error);
        Assert.Equal(requestId, outcome.RequestId);
        Assert.Equal(PromptStatus.Failed, (await new PromptResultStore(database).FindAsync(requestId, default))?.Status);
    }

    [Fact]
    public async Task BroadcastCancelIsSentWithoutDatabase()
    {
        using var canceller = Canceller(new MongoClient(UnreachableMongoUri).GetDatabase("unreachable"), _inMemoryBroker);
        var requestId = Guid.NewGuid();

        var outcome = await canceller.CancelAsync(User(), requestId, default).WaitAsync(Patience);

        Assert.Equal(StatusCodes.Status202Accepted, outcome.Status);
        Assert.Null(outcome.Error);
        Assert.Equal(requestId, outcome.RequestId);
    }

    private static ClaimsPrincipal User() =>
        new(new ClaimsIdentity([new Claim(AuthSchemes.AppIdClaim, "app_cancel"), new Claim(AuthSchemes.UserIdClaim, "alice")], "test"));

    private PromptCanceller Canceller(IMongoDatabase database, IBusControl bus)
    {
        var options = Options.Create(new PromptOptions { PublishTimeoutSeconds = 1 });
        var publisher = new ConfirmedPublisher(bus, bus, options, TimeProvider.System, _loggers.CreateLogger<ConfirmedPublisher>());
        return new PromptCanceller(publisher, Tokens, new PromptResultStore(database), options, TimeProvider.System,
            _loggers.CreateLogger<PromptCanceller>());
    }
}
