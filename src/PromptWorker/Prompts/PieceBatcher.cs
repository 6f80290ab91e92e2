using System.Text;
using AddOnEvents.Contracts;
using MassTransit;

namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// Collects streamed text and publishes it as ordered <see cref="PromptPiece"/> messages, at most one per interval
/// or per size limit, so an answer of hundreds of tokens costs tens of broker messages.
/// </summary>
/// <remarks>
/// Pieces are a preview: the final result carries the whole text, and Ingress fills a gap in the pieces from it. So
/// a failed publish never ends the upstream call, and reading the upstream never waits for the broker. One publish is
/// in flight at a time, and text that arrives meanwhile goes out with the next piece. While the broker is
/// unreachable, a publish in MassTransit 8.5.12 waits instead of failing, so each one is given up after
/// <see cref="PublishTimeout"/>, and the text of the following <see cref="PauseAfterFailure"/> is dropped.
/// </remarks>
/// <param name="attempt">The first upstream attempt of this run, which separates its pieces from those of an earlier run.</param>
/// <param name="cancellationToken">Cancelled when the worker stops; a piece publish is never tied to the delivery's token.</param>
public sealed partial class PieceBatcher(
    ConsumeContext<PromptRequested> context,
    TimeProvider clock,
    PromptWorkerOptions options,
    int attempt,
    ILogger logger,
    CancellationToken cancellationToken)
{
    /// <summary>Time after a failed publish during which pieces are dropped without trying the broker.</summary>
    public static readonly TimeSpan PauseAfterFailure = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Maximum wait for one piece's publish and its confirm. A confirm normally takes milliseconds, and the text goes
    /// out with the final result anyway.
    /// </summary>
    public static readonly TimeSpan PublishTimeout = TimeSpan.FromSeconds(5);

    private readonly StringBuilder _pending = new();
    private long _lastFlush = clock.GetTimestamp();
    private Task _publishing = Task.CompletedTask;

    // Written by a publish that failed; read only after that publish has completed.
    private long? _failedAt;
    private int _failed;
    private int _skipped;

    /// <summary>
    /// Sequence numbers used so far, by published pieces and by pieces whose publish failed. A retry after the first
    /// piece would garble the answer.
    /// </summary>
    public int Published { get; private set; }

    /// <summary>Pieces lost to a failed publish or dropped while the broker was unreachable.</summary>
    public int Dropped => _failed + _skipped;

    /// <summary>Characters of answer text received from the upstream so far, published or not.</summary>
    public long ReceivedCharacters { get; private set; }

    /// <summary>Adds received text and starts a publish when the interval or the size limit is reached, without waiting for it.</summary>
    public Task AddAsync(string text)
    {
        _pending.Append(text);
        ReceivedCharacters += text.Length;
        // The first piece goes out at once, because the time to the first visible text is what users notice.
        if (Published == 0
            || _pending.Length >= options.PieceMaxCharacters
            || clock.GetElapsedTime(_lastFlush) >= TimeSpan.FromMilliseconds(options.PieceIntervalMilliseconds))
        {
            StartPublish();
        }

        return Task.CompletedTask;
    }

    /// <summary>Publishes the text not yet sent, after the publish in flight; waits at most two <see cref="PublishTimeout"/>s.</summary>
    public async Task FlushAsync()
    {
        await _publishing;
        StartPublish();
        await _publishing;
    }

    private void StartPublish()
    {
        if (_pending.Length == 0 || !_publishing.IsCompleted)
        {
            return;
        }

        string text = _pending.ToString();
        _pending.Clear();
        _lastFlush = clock.GetTimestamp();
        if (_failedAt is { } failedAt && clock.GetElapsedTime(failedAt) < PauseAfterFailure)
        {
            // A dropped piece uses no sequence number, so the only gaps in the sequence are the failed pieces.
            _skipped++;
            return;
        }

        // A publish that failed may still have reached the broker, so its sequence number is not used again.
        int sequence = Published++;
        _publishing = PublishAsync(sequence, text);
    }

    private async Task PublishAsync(int sequence, string text)
    {
        var prompt = context.Message;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(PublishTimeout);
        try
        {
            await context.Publish(
                new PromptPiece(prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo, sequence, text, attempt),
                publish => publish.TimeToLive = TimeSpan.FromMinutes(1),
                timeout.Token);
            _failedAt = null;
        }
        catch (Exception ex) when (!cancellationToken.IsCancellationRequested)
        {
            _failed++;
            _failedAt = clock.GetTimestamp();
            LogPieceFailed(logger, prompt.RequestId, sequence, ex.GetType().Name, PauseAfterFailure.TotalMilliseconds);
        }
    }

    [LoggerMessage(EventId = 3010, Level = LogLevel.Warning,
        Message = "Failed to publish piece {Sequence} of request {RequestId} with {ExceptionType}. Dropping pieces for {PauseMilliseconds} ms, "
            + "and the final result carries the whole text")]
    private static partial void LogPieceFailed(ILogger logger, Guid requestId, int sequence, string exceptionType, double pauseMilliseconds);
}
