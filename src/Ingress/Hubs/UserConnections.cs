using System.Collections.Concurrent;
using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>
/// The hub connections open on this instance, so that the connections of a user whose client stopped reading can be
/// closed, and one user cannot hold an unbounded number of them. SignalR's hub context can send to a user but
/// cannot close the user's connections.
/// </summary>
public sealed class UserConnections
{
    private readonly ConcurrentDictionary<string, HubCallerContext> _connections = new();
    private readonly ConcurrentDictionary<string, int> _perUser = new();

    /// <summary>Adds the connection, or returns false when its user already has <paramref name="maxPerUser"/> here.</summary>
    public bool TryAdd(HubCallerContext connection, int maxPerUser)
    {
        if (connection.UserIdentifier is { } user && _perUser.AddOrUpdate(user, 1, (_, count) => count + 1) > maxPerUser)
        {
            Release(user);
            return false;
        }

        _connections[connection.ConnectionId] = connection;
        return true;
    }

    /// <summary>Every connection open on this instance.</summary>
    public IEnumerable<HubCallerContext> All => _connections.Values;

    public void Remove(HubCallerContext connection)
    {
        if (_connections.TryRemove(connection.ConnectionId, out _) && connection.UserIdentifier is { } user)
        {
            Release(user);
        }
    }

    /// <summary>Closes every connection of the user on this instance and returns how many were open.</summary>
    public int Abort(string userId)
    {
        int aborted = 0;
        foreach (var connection in _connections.Values)
        {
            if (connection.UserIdentifier == userId)
            {
                connection.Abort();
                aborted++;
            }
        }

        return aborted;
    }

    // A user whose last connection closes leaves no entry behind, so the counts take memory only for users online.
    private void Release(string user)
    {
        while (_perUser.TryGetValue(user, out int count))
        {
            bool done = count <= 1
                ? _perUser.TryRemove(new KeyValuePair<string, int>(user, count))
                : _perUser.TryUpdate(user, count - 1, count);
            if (done)
            {
                return;
            }
        }
    }
}
