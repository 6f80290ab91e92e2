using System.Security.Claims;
using System.Threading.RateLimiting;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Options;
using Microsoft.Extensions.Options;
using MongoDB.Driver;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Records a user's cancel for a request no worker has started, and broadcasts it to every PromptWorker. Both name
/// the app and user from the verified token, and a worker stops the request only if both match, so no user can stop
/// another user's answer.
/// </summary>
public sealed class PromptCanceller : IDisposable
{
    public const string TooManyCancels = "You sent too many cancels this minute. Try again shortly.";

    private readonly ConfirmedPublisher _publisher;
    private readonly UserTokens _tokens;
    private readonly PromptResultStore _results;
    private readonly TimeSpan _timeToLive;
    private readonly TimeProvider _clock;
    private readonly ILogger<PromptCanceller> _logger;

    // Every cancel reaches every worker, and each worker remembers a bounded number of cancels for prompts it has
    // not seen yet. Without a limit, one user's flood of made-up cancels would load every worker and push out
    // another user's real cancel before its prompt leaves the queue.
    private readonly PartitionedRateLimiter<string> _perUser;

    public PromptCanceller(ConfirmedPublisher publisher, UserTokens tokens, PromptResultStore results, IOptions<PromptOptions> options, TimeProvider clock,
        ILogger<PromptCanceller> logger)
    {
        _publisher = publisher;
        _tokens = tokens;
        _results = results;
        _timeToLive = TimeSpan.FromSeconds(options.Value.TimeToLiveSeconds);
        _clock = clock;
        _logger = logger;
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

        // The record reaches a worker that receives the prompt after the broadcast is gone, for example one started
        // later. It lasts as long as a prompt may wait in the queue.
        var now = _clock.GetUtcNow().UtcDateTime;
        try
        {
            await _results.RecordCancelAsync(requestId, appId, pseudonym, now, now + _timeToLive, cancellationToken);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException)
        {
            // Workers still remember the broadcast cancel for a while, which covers a prompt waiting in the queue now.
            Log.CancelNotRecorded(_logger, appId, ex.GetType().Name);
        }

        // The broadcast stops a running prompt at once. The record stops it only at the worker's next lease renewal,
        // which is why a broadcast that a broker outage stops (logged by the publisher) still leaves the cancel in force.
        await _publisher.PublishAsync(new PromptCancelled(requestId, requestId, appId, pseudonym, _clock.GetUtcNow()), TimeSpan.FromMinutes(1));
    }

    public void Dispose() => _perUser.Dispose();
}
