using System.Collections.Concurrent;
using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>
/// The hub connections open on this instance, so that the connections of a user whose client stopped reading can be
/// closed. SignalR's hub context can send to a user but cannot close the user's connections.
/// </summary>
public sealed class UserConnections
{
    private readonly ConcurrentDictionary<string, HubCallerContext> _connections = new();

    public void Add(HubCallerContext connection) => _connections[connection.ConnectionId] = connection;

    public void Remove(HubCallerContext connection) => _connections.TryRemove(connection.ConnectionId, out _);

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
}
