using System.Security.Claims;
using System.Threading.RateLimiting;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Broadcasts a user's cancel to every PromptWorker. It names the app and user from the verified token, and a
/// worker stops the request only if both match, so nobody can stop another user's answer.
/// </summary>
public sealed class PromptCanceller : IDisposable
{
    public const string TooManyCancels = "You sent too many cancels this minute. Try again shortly.";

    private readonly IBus _bus;
    private readonly UserTokens _tokens;
    private readonly TimeProvider _clock;

    // Every cancel reaches every worker, and each worker remembers a bounded number of cancels for prompts it has
    // not seen yet. Without a limit, one user's flood of made-up cancels would load every worker and push out
    // another user's real cancel before its prompt leaves the queue.
    private readonly PartitionedRateLimiter<string> _perUser;

    public PromptCanceller(IBus bus, UserTokens tokens, IOptions<PromptOptions> options, TimeProvider clock)
    {
        _bus = bus;
        _tokens = tokens;
        _clock = clock;
        int perMinute = options.Value.CancelsPerMinute;
        _perUser = PartitionedRateLimiter.Create<string, string>(pseudonym => RateLimitPartition.GetFixedWindowLimiter(pseudonym,
            _ => new FixedWindowRateLimiterOptions
            {
                PermitLimit = perMinute,
                Window = TimeSpan.FromMinutes(1),
                QueueLimit = 0,
                AutoReplenishment = false,
            }));
    }

    /// <summary>
    /// Sends the user's cancel, or returns the seconds to wait when the user sent more than
    /// <see cref="PromptOptions.CancelsPerMinute"/> cancels in the current minute.
    /// </summary>
    public async Task<int?> CancelAsync(ClaimsPrincipal user, Guid requestId, CancellationToken cancellationToken)
    {
        string? pseudonym = _tokens.Pseudonym(user);
        if (pseudonym is null)
        {
            return null;
        }

        using var lease = _perUser.AttemptAcquire(pseudonym);
        if (!lease.IsAcquired)
        {
            return lease.TryGetMetadata(MetadataName.RetryAfter, out var retryAfter) ? Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds)) : 60;
        }

        await PublishAsync(user, pseudonym, requestId, cancellationToken);
        return null;
    }

    /// <summary>
    /// Sends the cancel of a request whose caller went away while waiting for it. It is never limited, because only
    /// a request the caller itself started can end this way.
    /// </summary>
    public Task CancelAbandonedAsync(ClaimsPrincipal user, Guid requestId, CancellationToken cancellationToken) =>
        _tokens.Pseudonym(user) is { } pseudonym ? PublishAsync(user, pseudonym, requestId, cancellationToken) : Task.CompletedTask;

    private async Task PublishAsync(ClaimsPrincipal user, string pseudonym, Guid requestId, CancellationToken cancellationToken)
    {
        if (user.FindFirstValue(AuthSchemes.AppIdClaim) is not { } appId)
        {
            return;
        }

        await _bus.Publish(new PromptCancelled(requestId, requestId, appId, pseudonym, _clock.GetUtcNow()),
            publish => publish.TimeToLive = TimeSpan.FromMinutes(1), cancellationToken);
    }

    public void Dispose() => _perUser.Dispose();
}
