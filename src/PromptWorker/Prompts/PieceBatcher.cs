using System.Text;
using AddOnEvents.Contracts;
using MassTransit;

namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// Collects streamed text and publishes it as ordered <see cref="PromptPiece"/> messages, at most one per interval
/// or per size limit, so an answer of hundreds of tokens costs tens of broker messages.
/// </summary>
/// <param name="attempt">The first upstream attempt of this run, which separates its pieces from those of an earlier run.</param>
public sealed class PieceBatcher(ConsumeContext<PromptRequested> context, TimeProvider clock, PromptWorkerOptions options, int attempt)
{
    private readonly StringBuilder _pending = new();
    private long _lastFlush = clock.GetTimestamp();

    /// <summary>Number of pieces published so far; a retry after the first piece would garble the answer.</summary>
    public int Published { get; private set; }

    /// <summary>Characters of answer text received from the upstream so far, published or not.</summary>
    public long ReceivedCharacters { get; private set; }

    public async Task AddAsync(string text)
    {
        _pending.Append(text);
        ReceivedCharacters += text.Length;
        // The first piece goes out at once, because the time to the first visible text is what users notice.
        if (Published == 0
            || _pending.Length >= options.PieceMaxCharacters
            || clock.GetElapsedTime(_lastFlush) >= TimeSpan.FromMilliseconds(options.PieceIntervalMilliseconds))
        {
            await FlushAsync();
        }
    }

    public async Task FlushAsync()
    {
        if (_pending.Length == 0)
        {
            return;
        }

        var prompt = context.Message;
        string text = _pending.ToString();
        _pending.Clear();
        _lastFlush = clock.GetTimestamp();
        await context.Publish(
            new PromptPiece(prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo, Published, text, attempt),
            publish => publish.TimeToLive = TimeSpan.FromMinutes(1),
            context.CancellationToken);
        Published++;
    }
}
