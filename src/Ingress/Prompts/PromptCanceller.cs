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

    public const string NotDelivered = "The cancel could not be stored or delivered to the workers. Send it again in a few seconds.";

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
    /// Sends the user's cancel. Returns a 202 submission when the cancel was stored or its broadcast confirmed, because
    /// either one keeps it in force. Returns a 429 rejection with the seconds to wait when the user sent more than
    /// <see cref="PromptOptions.CancelsPerMinute"/> cancels in the current minute, and a 503 rejection when the cancel
    /// was neither stored nor confirmed.
    /// </summary>
    public async Task<Submission> CancelAsync(ClaimsPrincipal user, Guid requestId, CancellationToken cancellationToken)
    {
        var sent = new Submission(requestId, StatusCodes.Status202Accepted, null);
        string? pseudonym = _tokens.Pseudonym(user);
        if (pseudonym is null)
        {
            return sent;
        }

        using var lease = _perUser.AttemptAcquire(pseudonym);
        if (!lease.IsAcquired)
        {
            int retryAfter = lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 60;
            return Submission.Rejected(StatusCodes.Status429TooManyRequests, ErrorCodes.RateLimited, TooManyCancels, retryAfter);
        }

        return await PublishAsync(user, pseudonym, requestId, cancellationToken)
            ? sent
            : Submission.Rejected(StatusCodes.Status503ServiceUnavailable, ErrorCodes.ServiceUnavailable, NotDelivered,
                ApiErrors.OutageRetryAfterSeconds);
    }

    /// <summary>
    /// Sends the cancel of a request whose caller went away while waiting for it. It is never limited, because only
    /// a request the caller itself started can end this way, and a lost cancel is only logged, because no caller
    /// is left to send it again.
    /// </summary>
    public Task CancelAbandonedAsync(ClaimsPrincipal user, Guid requestId, CancellationToken cancellationToken) =>
        _tokens.Pseudonym(user) is { } pseudonym ? PublishAsync(user, pseudonym, requestId, cancellationToken) : Task.CompletedTask;

    /// <summary>Stores and broadcasts the cancel, and returns false when neither the store nor the broker accepted it.</summary>
    private async Task<bool> PublishAsync(ClaimsPrincipal user, string pseudonym, Guid requestId, CancellationToken cancellationToken)
    {
        if (user.FindFirstValue(AuthSchemes.AppIdClaim) is not { } appId)
        {
            return true;
        }

        // The record reaches a worker that receives the prompt after the broadcast is gone, for example one started
        // later. It lasts as long as a prompt may wait in the queue.
        var now = _clock.GetUtcNow().UtcDateTime;
        bool recorded = true;
        try
        {
            await _results.RecordCancelAsync(requestId, appId, pseudonym, now, now + _timeToLive, cancellationToken);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException)
        {
            // Workers still remember the broadcast cancel for a while, which covers a prompt waiting in the queue now.
            recorded = false;
            Log.CancelNotRecorded(_logger, appId, ex.GetType().Name);
        }

        // The broadcast stops a running prompt at once. The record stops it only at the worker's next lease renewal,
        // so either one alone keeps the cancel in force. The publisher logs a broadcast that the broker did not confirm.
        bool broadcast = await _publisher.PublishAsync(new PromptCancelled(requestId, requestId, appId, pseudonym, _clock.GetUtcNow()),
            TimeSpan.FromMinutes(1));
        if (!recorded && !broadcast)
        {
            Log.CancelLost(_logger, appId, requestId);
            return false;
        }

        return true;
    }

    public void Dispose() => _perUser.Dispose();
}
