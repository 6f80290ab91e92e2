using AddOnEvents.Common.Storage;
using Microsoft.Extensions.Options;
using MongoDB.Driver;

namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// Deletes expired answers, claims and counters on a timer, and releases the tokens reserved by prompts that never
/// finished. TTL indexes do the same on MongoDB, but this sweep does
/// not depend on them, and every PromptWorker instance runs it (the deletes are idempotent).
/// </summary>
public sealed partial class ExpiredDataCleaner(
    PromptResultStore results,
    UsageStore usage,
    TokenReservationStore reservations,
    RateCounterStore rates,
    TimeProvider clock,
    IOptions<PromptWorkerOptions> options,
    ILogger<ExpiredDataCleaner> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await results.EnsureIndexesAsync(stoppingToken);
            await usage.EnsureIndexesAsync(stoppingToken);
            await rates.EnsureIndexesAsync(stoppingToken);
            await reservations.EnsureIndexesAsync(stoppingToken);
        }
        catch (MongoException ex)
        {
            LogIndexFailed(ex.GetType().Name);
        }

        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.Value.CleanupIntervalSeconds), clock);
        do
        {
            try
            {
                var now = clock.GetUtcNow().UtcDateTime;
                long deleted = await results.DeleteExpiredAsync(now, stoppingToken)
                    + await usage.DeleteExpiredAsync(now, stoppingToken)
                    + await rates.DeleteExpiredAsync(now, stoppingToken)
                    + await reservations.ReleaseExpiredAsync(now, stoppingToken);
                LogSwept(deleted);
            }
            catch (Exception ex) when (ex is MongoException or TimeoutException)
            {
                LogSweepFailed(ex.GetType().Name);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    [LoggerMessage(EventId = 3201, Level = LogLevel.Debug, Message = "Deleted {Count} expired results and counters")]
    private partial void LogSwept(long count);

    [LoggerMessage(EventId = 3202, Level = LogLevel.Warning, Message = "Failed to delete expired results and counters: {ExceptionType}; retrying on the next tick")]
    private partial void LogSweepFailed(string exceptionType);

    [LoggerMessage(EventId = 3203, Level = LogLevel.Warning, Message = "Failed to create the expiry indexes: {ExceptionType}")]
    private partial void LogIndexFailed(string exceptionType);
}
