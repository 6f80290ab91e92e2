using AddOnEvents.Common.Storage;

namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// Moves the results and counters that builds with fewer parts per store left in another part to the part their id
/// hashes to, where lookups by id find them. It does the move in <see cref="StartAsync"/>, and it is registered
/// before the bus, so the host starts consuming prompts only after the move. Every PromptWorker instance runs it at
/// each start, and a run that finds nothing left to move only reads the parts that earlier layouts used.
/// </summary>
public sealed partial class MisplacedDocumentMover(
    PromptResultStore results,
    UsageStore usage,
    RateCounterStore rates,
    ILogger<MisplacedDocumentMover> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await MoveAsync(PromptResultStore.CollectionName, results.MoveMisplacedAsync, cancellationToken);
        await MoveAsync(UsageStore.CollectionName, usage.MoveMisplacedAsync, cancellationToken);
        await MoveAsync(RateCounterStore.CollectionName, rates.MoveMisplacedAsync, cancellationToken);
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Runs one collection's move. A failure is logged and the worker starts anyway, because the documents left
    /// behind stay where they are until the next start moves them, while a worker that fails to start processes no prompts.
    /// </summary>
    private async Task MoveAsync(string collection, Func<CancellationToken, Task<long>> move, CancellationToken cancellationToken)
    {
        try
        {
            long moved = await move(cancellationToken);
            LogMoved(collection, moved);
        }
        catch (Exception ex) when (ex is MongoDB.Driver.MongoException or TimeoutException)
        {
            LogMoveFailed(collection, ex.GetType().Name);
        }
    }

    [LoggerMessage(EventId = 3301, Level = LogLevel.Information, Message = "Moved {Count} documents of {Collection} from the parts of an earlier layout to the part their id hashes to")]
    private partial void LogMoved(string collection, long count);

    [LoggerMessage(EventId = 3302, Level = LogLevel.Warning, Message = "Failed to move the misplaced documents of {Collection}: {ExceptionType}. The next start tries again")]
    private partial void LogMoveFailed(string collection, string exceptionType);
}
