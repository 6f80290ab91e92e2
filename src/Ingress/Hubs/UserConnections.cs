using System.Collections.Concurrent;
using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>
/// The hub connections open on this instance, indexed by user. SignalR's default hub context finds a user's
/// connections by checking every connection on the instance. The index finds them directly, closes the connections
/// of a user whose client stopped reading, and limits how many connections one user may open.
/// </summary>
public sealed class UserConnections(IHubContext<AddOnHub> hub, ILogger<UserConnections> logger)
{
    /// <summary>Maximum wait for a user's connections to take one message.</summary>
    public static readonly TimeSpan PushTimeout = TimeSpan.FromSeconds(3);

    private readonly ConcurrentDictionary<string, HubCallerContext> _connections = new();

    // Arrays are replaced, never changed, so a reader gets a consistent list without a lock. A user's last
    // connection to close removes the entry, so the index takes memory only for users online.
    private readonly ConcurrentDictionary<string, HubCallerContext[]> _byUser = new(StringComparer.Ordinal);

    /// <summary>Adds the connection, or returns false when its user already has <paramref name="maxPerUser"/> here.</summary>
    public bool TryAdd(HubCallerContext connection, int maxPerUser)
    {
        if (connection.UserIdentifier is { } user)
        {
            while (true)
            {
                if (_byUser.TryGetValue(user, out var current))
                {
                    if (current.Length >= maxPerUser)
                    {
                        return false;
                    }

                    if (_byUser.TryUpdate(user, [.. current, connection], current))
                    {
                        break;
                    }
                }
                else if (_byUser.TryAdd(user, [connection]))
                {
                    break;
                }
            }
        }

        _connections[connection.ConnectionId] = connection;
        return true;
    }

    /// <summary>Every connection open on this instance.</summary>
    public IEnumerable<HubCallerContext> All => _connections.Values;

    public void Remove(HubCallerContext connection)
    {
        if (!_connections.TryRemove(connection.ConnectionId, out _) || connection.UserIdentifier is not { } user)
        {
            return;
        }

        while (_byUser.TryGetValue(user, out var current))
        {
            var rest = Array.FindAll(current, other => !ReferenceEquals(other, connection));
            bool done = rest.Length == 0
                ? _byUser.TryRemove(new KeyValuePair<string, HubCallerContext[]>(user, current))
                : _byUser.TryUpdate(user, rest, current);
            if (done)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Calls a client method on every connection of the user on this instance, giving up after
    /// <see cref="PushTimeout"/>. A client that stops reading fills its connection's buffer, and each send to it would
    /// occupy one of the caller's consumer slots, so other users' messages would wait too. The first send that gives up
    /// therefore closes the user's connections, and later sends to the user return at once. The client reconnects and
    /// fetches the results it missed by request id.
    /// </summary>
    public async Task SendAsync(string userId, string method, object payload, CancellationToken cancellationToken)
    {
        if (!_byUser.TryGetValue(userId, out var current))
        {
            return;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(PushTimeout);

        // One send per connection, because sending to a list of connection ids makes SignalR's default hub
        // context check every connection of the instance against the list.
        var sends = new Task[current.Length];
        for (int i = 0; i < current.Length; i++)
        {
            sends[i] = hub.Clients.Client(current[i].ConnectionId).SendAsync(method, payload, timeout.Token);
        }

        try
        {
            await Task.WhenAll(sends);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Log.PushTimedOut(logger, method, PushTimeout.TotalSeconds, Abort(userId));
        }
    }

    /// <summary>Closes every connection of the user on this instance and returns how many were open.</summary>
    public int Abort(string userId)
    {
        if (!_byUser.TryGetValue(userId, out var current))
        {
            return 0;
        }

        foreach (var connection in current)
        {
            connection.Abort();
        }

        return current.Length;
    }
}
