using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using AddOnEvents.Common.Storage;
using AddOnEvents.Ingress.Apps;
using MongoDB.Driver;

namespace AddOnEvents.Ingress.Webhooks;

/// <summary>
/// Sends the webhook deliveries stored in the <see cref="WebhookOutbox"/> to host backends, signed and retried. Every
/// Ingress instance runs it, so deliveries go on when the instance that stored them stops. The signature header is
/// <c>AddOnEvents-Signature: t=UNIX_SECONDS,v1=HEX</c>, where HEX is HMAC-SHA256 under the app's signing secret of
/// <c>UNIX_SECONDS + "." + body</c>; a receiver recomputes it and rejects old timestamps to stop replays.
/// </summary>
public sealed partial class WebhookSender(IHttpClientFactory httpClients, WebhookOutbox outbox, AppStore apps, UsageStore usage,
    TimeProvider clock, ILogger<WebhookSender> logger) : BackgroundService
{
    public const string HttpClientName = "webhooks";
    public const string SignatureHeader = "AddOnEvents-Signature";

    /// <summary>Attempts per delivery, with waits of 1, 4 and 16 seconds between them.</summary>
    public const int MaxAttempts = 4;

    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan SendTimeout = TimeSpan.FromSeconds(10);

    // Longer than an attempt normally takes (a few database reads, which give up after 5 s when the server cannot be
    // reached, and the 10-second send timeout), so usually only the claim of a stopped instance is taken over. An attempt that outlasts its lease
    // can be made a second time by another instance.
    private static readonly TimeSpan Lease = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ExpirySweepInterval = TimeSpan.FromMinutes(1);

    // Bounds the claims that one instance holds at once, so a backlog does not make it claim entries whose lease
    // would run out before their turn comes.
    private const int MaxConcurrentSends = 32;

    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private int _sending;

    /// <summary>Makes the loop look for due deliveries now instead of at its next poll.</summary>
    public void Wake() => _wake.Writer.TryWrite(true);

    public static string Sign(string secret, long timestamp, string body)
    {
        byte[] mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret),
            Encoding.UTF8.GetBytes(timestamp.ToString(CultureInfo.InvariantCulture) + "." + body));
        return $"t={timestamp.ToString(CultureInfo.InvariantCulture)},v1={Convert.ToHexStringLower(mac)}";
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await outbox.EnsureIndexesAsync(stoppingToken);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException)
        {
            LogIndexFailed(ex.GetType().Name);
        }

        var nextSweep = DateTime.MinValue;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var now = clock.GetUtcNow().UtcDateTime;
                if (now >= nextSweep)
                {
                    await outbox.DeleteExpiredAsync(now, stoppingToken);
                    nextSweep = now + ExpirySweepInterval;
                }

                await ClaimDueAsync(stoppingToken);
            }
            catch (Exception ex) when (ex is MongoException or TimeoutException)
            {
                LogPollFailed(ex.GetType().Name);
            }

            await WaitForWakeAsync(stoppingToken);
        }
    }

    /// <summary>Claims due deliveries and starts sending each, until none is due or this instance sends its maximum.</summary>
    private async Task ClaimDueAsync(CancellationToken stoppingToken)
    {
        while (Volatile.Read(ref _sending) < MaxConcurrentSends)
        {
            var claimed = await outbox.ClaimDueAsync(clock.GetUtcNow().UtcDateTime, Lease, stoppingToken);
            if (claimed is null)
            {
                return;
            }

            Interlocked.Increment(ref _sending);
            _ = SendClaimedAsync(claimed, stoppingToken);
        }
    }

    private async Task WaitForWakeAsync(CancellationToken stoppingToken)
    {
        using var poll = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        poll.CancelAfter(PollInterval);
        try
        {
            await _wake.Reader.WaitToReadAsync(poll.Token);
            _wake.Reader.TryRead(out _);
        }
        catch (OperationCanceledException)
        {
            // The poll interval ran out, or the service is stopping, which the caller's loop checks.
        }
    }

    private async Task SendClaimedAsync(ClaimedDelivery claimed, CancellationToken stoppingToken)
    {
        try
        {
            await AttemptAsync(claimed, stoppingToken);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException)
        {
            // The claim stays until its lease runs out, and then the next attempt is made by whichever instance claims it.
            LogOutboxWriteFailed(claimed.Entry.AppId, claimed.Entry.Attempts, ex.GetType().Name);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping during a write to the outbox: the lease runs out and another instance makes the next attempt.
        }
        finally
        {
            Interlocked.Decrement(ref _sending);
            Wake();
        }
    }

    /// <summary>Makes the attempt that the claim counted, then deletes the entry or schedules the next attempt.</summary>
    private async Task AttemptAsync(ClaimedDelivery claimed, CancellationToken stoppingToken)
    {
        var entry = claimed.Entry;
        int attempt = entry.Attempts;
        if (attempt > MaxAttempts)
        {
            // An instance stopped during the last attempt, so the number of attempts is used up.
            await outbox.DeleteClaimedAsync(entry, stoppingToken);
            LogGaveUp(entry.AppId, MaxAttempts);
            return;
        }

        if (claimed.Body.Length == 0)
        {
            await outbox.DeleteClaimedAsync(entry, stoppingToken);
            LogUnreadable(entry.AppId);
            return;
        }

        try
        {
            var app = await apps.FindAsync(entry.AppId, stoppingToken);
            if (app?.WebhookUrl is not { } url
                || await usage.GetUserMonthAsync(entry.AppId, entry.UserPseudonym, entry.CrossedAt, stoppingToken) is null)
            {
                await outbox.DeleteClaimedAsync(entry, stoppingToken);
                LogWithdrawn(entry.AppId, attempt);
                return;
            }

            if (await SendAsync(app, url, claimed.Body, stoppingToken) is not { } failure)
            {
                // Not cancellable by a stop, because a delivered entry that stayed would be sent again by another instance.
                await outbox.DeleteClaimedAsync(entry, CancellationToken.None);
                LogDelivered(entry.AppId, attempt);
                return;
            }

            LogAttemptFailed(entry.AppId, attempt, failure);
        }
        catch (Exception ex) when (ex is HttpRequestException or MongoException or TimeoutException
            || (ex is OperationCanceledException && !stoppingToken.IsCancellationRequested))
        {
            LogAttemptFailed(entry.AppId, attempt, ex.GetType().Name);
        }
        catch (OperationCanceledException)
        {
            // This instance is stopping: the claim is handed back so that another instance makes the next attempt now.
            await outbox.RescheduleAsync(entry, clock.GetUtcNow().UtcDateTime, CancellationToken.None);
            return;
        }

        if (attempt < MaxAttempts)
        {
            var wait = TimeSpan.FromSeconds(Math.Pow(4, attempt - 1));
            await outbox.RescheduleAsync(entry, clock.GetUtcNow().UtcDateTime + wait, stoppingToken);
            _ = WakeAfterAsync(wait, stoppingToken);
            return;
        }

        await outbox.DeleteClaimedAsync(entry, stoppingToken);
        LogGaveUp(entry.AppId, MaxAttempts);
    }

    /// <summary>Posts the signed body, and returns null on a 2xx response or else the failure to log.</summary>
    private async Task<string?> SendAsync(AppDocument app, string url, string body, CancellationToken stoppingToken)
    {
        // Read at each attempt rather than stored with the delivery, so the outbox never contains the secret.
        if (await apps.FindWebhookSecretAsync(app, stoppingToken) is not { } secret)
        {
            return "the signing secret is missing or does not decrypt";
        }

        using var request = new HttpRequestMessage(HttpMethod.Post, url)
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        };
        request.Headers.Add(SignatureHeader, Sign(secret, clock.GetUtcNow().ToUnixTimeSeconds(), body));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        timeout.CancelAfter(SendTimeout);
        using var response = await httpClients.CreateClient(HttpClientName).SendAsync(request, timeout.Token);
        return response.IsSuccessStatusCode ? null : ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>Wakes the loop when a retry is due, so on this instance the waits are not rounded up to the poll interval.</summary>
    private async Task WakeAfterAsync(TimeSpan wait, CancellationToken stoppingToken)
    {
        try
        {
            await Task.Delay(wait, clock, stoppingToken);
            Wake();
        }
        catch (OperationCanceledException)
        {
            // Stopping: another instance picks the delivery up when it is due.
        }
    }

    [LoggerMessage(EventId = 1109, Level = LogLevel.Information, Message = "Delivered a webhook of app {AppId} on attempt {Attempt}")]
    private partial void LogDelivered(string appId, int attempt);

    [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "Webhook attempt {Attempt} of app {AppId} failed: {Failure}")]
    private partial void LogAttemptFailed(string appId, int attempt, string failure);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Error, Message = "Gave up a webhook of app {AppId} after {Attempts} attempts")]
    private partial void LogGaveUp(string appId, int attempts);

    [LoggerMessage(EventId = 1111, Level = LogLevel.Information,
        Message = "Withdrew a webhook of app {AppId} before attempt {Attempt}: its URL was removed or the user it names was erased")]
    private partial void LogWithdrawn(string appId, int attempt);

    [LoggerMessage(EventId = 1112, Level = LogLevel.Warning,
        Message = "Failed to read due webhook deliveries: {ExceptionType}. Retrying at the next poll")]
    private partial void LogPollFailed(string exceptionType);

    [LoggerMessage(EventId = 1113, Level = LogLevel.Warning,
        Message = "Failed to update the stored webhook of app {AppId} after attempt {Attempt}: {ExceptionType}. Another attempt follows once its lease runs out")]
    private partial void LogOutboxWriteFailed(string appId, int attempt, string exceptionType);

    [LoggerMessage(EventId = 1114, Level = LogLevel.Error,
        Message = "Dropped a stored webhook of app {AppId}, because its body does not decrypt with the key derived from Auth:UserIdKey")]
    private partial void LogUnreadable(string appId);

    [LoggerMessage(EventId = 1115, Level = LogLevel.Warning, Message = "Failed to create the indexes of the webhook outbox: {ExceptionType}")]
    private partial void LogIndexFailed(string exceptionType);
}
