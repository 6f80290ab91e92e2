using System.Security.Claims;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>
/// Closes the hub connections whose token came from an app secret that no longer works. A connection proves its token
/// only when it opens, and results go to every connection of their user, so a connection opened with a leaked secret
/// would otherwise keep receiving that user's results until its token expires. Connections of a removed app stay
/// open: they can send nothing more, and they still receive the answers to prompts sent before the removal.
/// </summary>
public sealed class RevokedConnectionSweeper(
    UserConnections connections, AppStore apps, TimeProvider clock, ILogger<RevokedConnectionSweeper> logger) : BackgroundService
{
    /// <summary>
    /// Time between two checks of every open connection. The instance that revokes a secret checks that app's
    /// connections at once. Other instances follow within this interval plus the few seconds of their app cache.
    /// </summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval, clock);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await SweepAsync(null, stoppingToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Log.ConnectionSweepFailed(logger, ex.GetType().Name);
            }
        }
    }

    /// <summary>Closes the revoked connections of one app, or of every app when <paramref name="appId"/> is null.</summary>
    public async Task<int> SweepAsync(string? appId, CancellationToken cancellationToken)
    {
        var byApp = connections.All
            .Select(connection => (Connection: connection, AppId: connection.User?.FindFirstValue(AuthSchemes.AppIdClaim)))
            .Where(entry => entry.AppId is not null && (appId is null || entry.AppId == appId))
            .GroupBy(entry => entry.AppId!)
            .ToList();
        if (byApp.Count == 0)
        {
            return 0;
        }

        // One query for all apps with open connections: a sweep costs one database read, however many apps there are.
        var current = await apps.FindManyAsync(byApp.Select(group => group.Key), cancellationToken);
        var now = clock.GetUtcNow().UtcDateTime;
        int closed = 0;
        foreach (var group in byApp)
        {
            if (!current.TryGetValue(group.Key, out var app))
            {
                continue;
            }

            foreach (var (connection, _) in group)
            {
                if (!app.HasActiveSecret(connection.User, now))
                {
                    connection.Abort();
                    closed++;
                }
            }
        }

        if (closed > 0)
        {
            Log.RevokedConnectionsClosed(logger, closed);
        }

        return closed;
    }
}
