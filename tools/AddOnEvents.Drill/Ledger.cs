using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace AddOnEvents.Drill;

/// <summary>One prompt the drill sent, and what Ingress answered.</summary>
public sealed class SentPrompt(long sequence, int user, TimeSpan sentAt)
{
    public long Sequence { get; } = sequence;

    public int User { get; } = user;

    public TimeSpan SentAt { get; } = sentAt;

    public Guid? RequestId { get; set; }

    /// <summary>"202", or the status and code of a rejection, or why no response came.</summary>
    public string Answer { get; set; } = "";
}

/// <summary>The final results that arrived for one request id, over SignalR or, for a missed push, through GET.</summary>
public sealed class ResultTally
{
    public int Pushes { get; set; }

    /// <summary>"completed" or "failed: CODE", from the first final result.</summary>
    public string Outcome { get; set; } = "";

    public TimeSpan FirstPushAt { get; set; }

    /// <summary>Pushes that reached another user's connection, or whose text answers another prompt.</summary>
    public int Misrouted { get; set; }

    /// <summary>Sequence number of the prompt that the first pushed answer's text echoes; null for failures.</summary>
    public long? AnsweredSequence { get; set; }

    /// <summary>Set when no push came and GET /api/prompts/{id} returned the stored final result.</summary>
    public bool FetchedWithGet { get; set; }
}

/// <summary>Everything sent and received, with times relative to the start of the traffic. Thread-safe.</summary>
public sealed partial class Ledger
{
    private readonly long _origin = Stopwatch.GetTimestamp();
    private readonly object _gate = new();
    private readonly List<SentPrompt> _sent = [];
    private readonly ConcurrentDictionary<Guid, ResultTally> _results = new();

    public TimeSpan Now => Stopwatch.GetElapsedTime(_origin);

    public SentPrompt Send(long sequence, int user)
    {
        var prompt = new SentPrompt(sequence, user, Now);
        lock (_gate)
        {
            _sent.Add(prompt);
        }

        return prompt;
    }

    public static string PromptText(int user, long sequence) => string.Create(CultureInfo.InvariantCulture, $"drill u{user} n{sequence}");

    /// <summary>Records a pushed final result that reached <paramref name="user"/>'s connection.</summary>
    public void Push(Guid requestId, int user, string outcome, string? text)
    {
        var now = Now;
        var tally = _results.GetOrAdd(requestId, _ => new ResultTally());
        lock (tally)
        {
            tally.Pushes++;
            if (tally.Pushes == 1)
            {
                tally.Outcome = outcome;
                tally.FirstPushAt = now;
            }

            // The fake upstream answers "Echo: " and the prompt, so the text names the user and prompt it answers.
            if (text is not null && PromptInText().Match(text) is { Success: true } match)
            {
                if (int.Parse(match.Groups[1].ValueSpan, CultureInfo.InvariantCulture) != user)
                {
                    tally.Misrouted++;
                }

                tally.AnsweredSequence ??= long.Parse(match.Groups[2].ValueSpan, CultureInfo.InvariantCulture);
            }
        }
    }

    public void Fetched(Guid requestId, string outcome)
    {
        var tally = _results.GetOrAdd(requestId, _ => new ResultTally());
        lock (tally)
        {
            if (tally.Pushes == 0 && !tally.FetchedWithGet)
            {
                tally.FetchedWithGet = true;
                tally.Outcome = outcome;
            }
        }
    }

    public IReadOnlyList<SentPrompt> Sent()
    {
        lock (_gate)
        {
            return [.. _sent];
        }
    }

    public ResultTally? Result(Guid requestId) => _results.TryGetValue(requestId, out var tally) ? tally : null;

    public IReadOnlyDictionary<Guid, ResultTally> Results() => new Dictionary<Guid, ResultTally>(_results);

    /// <summary>Accepted prompts that have neither a pushed nor a fetched final result yet.</summary>
    public List<SentPrompt> Unanswered() =>
        [.. Sent().Where(p => p.RequestId is { } id && (Result(id) is not { } tally || (tally.Pushes == 0 && !tally.FetchedWithGet)))];

    [GeneratedRegex(@"drill u(\d+) n(\d+)")]
    private static partial Regex PromptInText();
}
