using System.Security.Claims;
using AddOnEvents.Ingress.Hubs;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.Logging.Abstractions;

namespace AddOnEvents.Tests.Unit;

public sealed class UserConnectionsTests
{
    [Fact]
    public async Task SendReachesOnlyTheUsersConnections()
    {
        var hub = new RecordingHubContext();
        var (connections, first, _, _) = TwoUsers(hub);

        await connections.SendAsync("alice", "PromptCompleted", "answer", CancellationToken.None);
        connections.Remove(first);
        await connections.SendAsync("alice", "PromptCompleted", "answer", CancellationToken.None);
        await connections.SendAsync("carol", "PromptCompleted", "answer", CancellationToken.None);

        Assert.Equal(["c1", "c2", "c2"], hub.Sent);
    }

    [Fact]
    public void LimitCountsOpenConnectionsPerUser()
    {
        var connections = new UserConnections(new RecordingHubContext(), NullLogger<UserConnections>.Instance);
        var first = new FakeConnection("c1", "alice");
        Assert.True(connections.TryAdd(first, 2));
        Assert.True(connections.TryAdd(new FakeConnection("c2", "alice"), 2));
        Assert.False(connections.TryAdd(new FakeConnection("c3", "alice"), 2));
        Assert.True(connections.TryAdd(new FakeConnection("c4", "bob"), 2));

        // A rejected connection was never added, so its disconnect must not free a slot.
        connections.Remove(new FakeConnection("c3", "alice"));
        Assert.False(connections.TryAdd(new FakeConnection("c5", "alice"), 2));

        connections.Remove(first);
        Assert.True(connections.TryAdd(new FakeConnection("c6", "alice"), 2));
    }

    [Fact]
    public void AbortClosesOnlyTheUsersConnections()
    {
        var (connections, first, second, other) = TwoUsers(new RecordingHubContext());

        Assert.Equal(2, connections.Abort("alice"));
        Assert.Equal(0, connections.Abort("carol"));
        Assert.True(first.Aborted);
        Assert.True(second.Aborted);
        Assert.False(other.Aborted);
    }

    [Fact]
    public async Task StalledSendClosesTheUsersConnections()
    {
        var (connections, first, second, other) = TwoUsers(new RecordingHubContext { Stall = true });

        await connections.SendAsync("alice", "AllowanceThreshold", "payload", CancellationToken.None).WaitAsync(UserConnections.PushTimeout * 3);

        Assert.True(first.Aborted);
        Assert.True(second.Aborted);
        Assert.False(other.Aborted);
    }

    /// <summary>Returns an index holding connections c1 and c2 of alice and c3 of bob.</summary>
    private static (UserConnections Connections, FakeConnection First, FakeConnection Second, FakeConnection Other) TwoUsers(
        RecordingHubContext hub)
    {
        var connections = new UserConnections(hub, NullLogger<UserConnections>.Instance);
        var first = new FakeConnection("c1", "alice");
        var second = new FakeConnection("c2", "alice");
        var other = new FakeConnection("c3", "bob");
        Assert.True(connections.TryAdd(first, 5));
        Assert.True(connections.TryAdd(second, 5));
        Assert.True(connections.TryAdd(other, 5));
        return (connections, first, second, other);
    }

    private sealed class FakeConnection(string id, string user) : HubCallerContext
    {
        public bool Aborted { get; private set; }

        public override string ConnectionId => id;

        public override string? UserIdentifier => user;

        public override ClaimsPrincipal? User => null;

        public override IDictionary<object, object?> Items { get; } = new Dictionary<object, object?>();

        public override IFeatureCollection Features { get; } = new FeatureCollection();

        public override CancellationToken ConnectionAborted => CancellationToken.None;

        public override void Abort() => Aborted = true;
    }

    /// <summary>Records the connection id of each send.</summary>
    private sealed class RecordingHubContext : IHubContext<AddOnHub>
    {
        private readonly RecordingClients _clients = new();

        /// <summary>Makes every send wait until it is cancelled, as for a client that stopped reading.</summary>
        public bool Stall
        {
            get => _clients.Stall;
            init => _clients.Stall = value;
        }

        public List<string> Sent => _clients.Sent;

        public IHubClients Clients => _clients;

        public IGroupManager Groups => throw new NotSupportedException();
    }

    private sealed class RecordingClients : IHubClients
    {
        public bool Stall { get; set; }

        public List<string> Sent { get; } = [];

        public IClientProxy Client(string connectionId) => new Proxy(this, connectionId);

        public IClientProxy All => throw new NotSupportedException();

        public IClientProxy AllExcept(IReadOnlyList<string> excludedConnectionIds) => throw new NotSupportedException();

        public IClientProxy Clients(IReadOnlyList<string> connectionIds) => throw new NotSupportedException();

        public IClientProxy Group(string groupName) => throw new NotSupportedException();

        public IClientProxy GroupExcept(string groupName, IReadOnlyList<string> excludedConnectionIds) => throw new NotSupportedException();

        public IClientProxy Groups(IReadOnlyList<string> groupNames) => throw new NotSupportedException();

        public IClientProxy User(string userId) => throw new NotSupportedException();

        public IClientProxy Users(IReadOnlyList<string> userIds) => throw new NotSupportedException();

        private sealed class Proxy(RecordingClients clients, string connectionId) : IClientProxy
        {
            public Task SendCoreAsync(string method, object?[] args, CancellationToken cancellationToken = default)
            {
                clients.Sent.Add(connectionId);
                return clients.Stall ? Task.Delay(Timeout.Infinite, cancellationToken) : Task.CompletedTask;
            }
        }
    }
}
