using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;

namespace AddOnEvents.Ingress.Webhooks;

/// <summary>One webhook delivery: where, with which secret, and the JSON body.</summary>
/// <param name="StillWanted">
/// Asked before every attempt: false when the host no longer wants the delivery, because the webhook URL was changed
/// or removed, or because the user it names was erased. Retries then stop, so no erased user id leaves afterwards.
/// </param>
public sealed record WebhookDelivery(string AppId, string Url, string Secret, object Payload, Func<CancellationToken, Task<bool>>? StillWanted = null);

/// <summary>
/// Sends webhooks to host backends in the background, signed and retried. The signature header is
/// <c>AddOnEvents-Signature: t=UNIX_SECONDS,v1=HEX</c>, where HEX is HMAC-SHA256 under the app's signing secret of
/// <c>UNIX_SECONDS + "." + body</c>; a receiver recomputes it and rejects old timestamps to stop replays.
/// </summary>
public sealed partial class WebhookSender(IHttpClientFactory httpClients, TimeProvider clock, ILogger<WebhookSender> logger) : BackgroundService
{
    public const string HttpClientName = "webhooks";
    public const string SignatureHeader = "AddOnEvents-Signature";

    /// <summary>Attempts per delivery, with waits of 1, 4 and 16 seconds between them.</summary>
    public const int MaxAttempts = 4;

    private readonly Channel<WebhookDelivery> _queue = Channel.CreateBounded<WebhookDelivery>(
        new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.DropOldest });

    public void Enqueue(WebhookDelivery delivery)
    {
        if (!_queue.Writer.TryWrite(delivery))
        {
            LogDropped(delivery.AppId);
        }
    }

    public static string Sign(string secret, long timestamp, string body)
    {
        byte[] mac = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret),
            Encoding.UTF8.GetBytes(timestamp.ToString(CultureInfo.InvariantCulture) + "." + body));
        return $"t={timestamp.ToString(CultureInfo.InvariantCulture)},v1={Convert.ToHexStringLower(mac)}";
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await foreach (var delivery in _queue.Reader.ReadAllAsync(stoppingToken))
        {
            _ = DeliverAsync(delivery, stoppingToken);
        }
    }

    private async Task DeliverAsync(WebhookDelivery delivery, CancellationToken stoppingToken)
    {
        string body = JsonSerializer.Serialize(delivery.Payload, JsonSerializerOptions.Web);
        for (int attempt = 1; attempt <= MaxAttempts; attempt++)
        {
            try
            {
                if (delivery.StillWanted is { } stillWanted && !await stillWanted(stoppingToken))
                {
                    LogWithdrawn(delivery.AppId, attempt);
                    return;
                }

                using var request = new HttpRequestMessage(HttpMethod.Post, delivery.Url)
                {
                    Content = new StringContent(body, Encoding.UTF8, "application/json"),
                };
                request.Headers.Add(SignatureHeader, Sign(delivery.Secret, clock.GetUtcNow().ToUnixTimeSeconds(), body));
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                timeout.CancelAfter(TimeSpan.FromSeconds(10));
                using var response = await httpClients.CreateClient(HttpClientName).SendAsync(request, timeout.Token);
                if (response.IsSuccessStatusCode)
                {
                    LogDelivered(delivery.AppId, attempt);
                    return;
                }

                LogAttemptFailed(delivery.AppId, attempt, ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture));
            }
            catch (Exception ex) when (ex is HttpRequestException or MongoDB.Driver.MongoException or TimeoutException
                || (ex is OperationCanceledException && !stoppingToken.IsCancellationRequested))
            {
                LogAttemptFailed(delivery.AppId, attempt, ex.GetType().Name);
            }

            if (attempt < MaxAttempts)
            {
                await Task.Delay(TimeSpan.FromSeconds(Math.Pow(4, attempt - 1)), clock, stoppingToken);
            }
        }

        LogGaveUp(delivery.AppId, MaxAttempts);
    }

    [LoggerMessage(EventId = 1109, Level = LogLevel.Information, Message = "Delivered a webhook of app {AppId} on attempt {Attempt}")]
    private partial void LogDelivered(string appId, int attempt);

    [LoggerMessage(EventId = 1110, Level = LogLevel.Warning, Message = "Webhook attempt {Attempt} of app {AppId} failed: {Failure}")]
    private partial void LogAttemptFailed(string appId, int attempt, string failure);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Error, Message = "Gave up a webhook of app {AppId} after {Attempts} attempts")]
    private partial void LogGaveUp(string appId, int attempts);

    [LoggerMessage(EventId = 1111, Level = LogLevel.Information,
        Message = "Withdrew a webhook of app {AppId} before attempt {Attempt}: its URL changed or the user it names was erased")]
    private partial void LogWithdrawn(string appId, int attempt);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Warning, Message = "Dropped a webhook of app {AppId}: the send queue is full")]
    private partial void LogDropped(string appId);
}
