using System.Collections.Concurrent;
using System.Diagnostics;
using HdrHistogram;

namespace AddOnEvents.Bench;

/// <summary>One prompt in flight: when it was due, and what the pipeline told about it so far.</summary>
public sealed class Pending(long sequence, long dueTimestamp)
{
    public long Sequence { get; } = sequence;

    /// <summary>Stopwatch time at which the open-loop schedule meant to send it; latency counts from here.</summary>
    public long DueTimestamp { get; } = dueTimestamp;

    /// <summary>Wall-clock time of the send, in microseconds since the Unix epoch, to line up with other processes.</summary>
    public long SentUnixMicroseconds { get; set; }

    /// <summary>Stopwatch time when the hub returned the request id (SignalR only), or 0.</summary>
    public long AcceptedTimestamp { get; set; }

    public Guid RequestId { get; set; }

    /// <summary>Stopwatch time of the first streamed piece, or 0.</summary>
    public long FirstPieceTimestamp { get; set; }
}

/// <summary>The timeline of one prompt across processes, for the hop breakdown.</summary>
public sealed record HopSample(
    Guid RequestId,
    long SentUs,
    long AcceptedUs,
    long UpstreamReceivedUs,
    long UpstreamMicroseconds,
    long DeliveredUs);

/// <summary>
/// Measures one load step: latencies and overheads in HdrHistograms (microseconds), errors by code, and the
/// prompts still in flight. Thread-safe; completions arrive on many threads.
/// </summary>
public sealed class LoadStep
{
    private const long HighestTrackable = 3_600_000_000;

    private readonly ConcurrentDictionary<long, Pending> _pending = new();
    private readonly ConcurrentDictionary<Guid, long> _byRequestId = new();
    private readonly ConcurrentDictionary<Guid, string> _earlyFailures = new();
    private readonly Lock _gate = new();
    private readonly LongHistogram _latency = new(1, HighestTrackable, 3);
    private readonly LongHistogram _overhead = new(1, HighestTrackable, 3);
    private readonly LongHistogram _upstream = new(1, HighestTrackable, 3);
    private readonly LongHistogram _sendLag = new(1, HighestTrackable, 3);
    private readonly LongHistogram _firstPiece = new(1, HighestTrackable, 3);
    private readonly Dictionary<string, int> _errors = new(StringComparer.Ordinal);
    private readonly List<HopSample> _hops = [];
    private long _lastCompletion;
    private long _sent;
    private long _ok;
    private long _late;

    public LoadStep(int id, string mode, double rate, bool stream = false, bool collectHops = false)
    {
        Id = id;
        Mode = mode;
        Rate = rate;
        Stream = stream;
        CollectHops = collectHops;
    }

    public int Id { get; }

    public string Mode { get; }

    public double Rate { get; }

    public bool Stream { get; }

    public bool CollectHops { get; }

    public long StartTimestamp { get; set; }

    public int InFlight => _pending.Count;

    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>Registers a prompt just before it is sent. <paramref name="sendTimestamp"/> is when the send really began.</summary>
    public Pending Begin(long sequence, long dueTimestamp, long sendTimestamp)
    {
        var pending = new Pending(sequence, dueTimestamp)
        {
            SentUnixMicroseconds = UnixMicroseconds(),
        };
        _pending[sequence] = pending;
        Interlocked.Increment(ref _sent);
        long lag = Stopwatch.GetElapsedTime(dueTimestamp, sendTimestamp).Ticks / TimeSpan.TicksPerMicrosecond;
        lock (_gate)
        {
            _sendLag.RecordValue(Math.Max(1, lag));
        }

        return pending;
    }

    /// <summary>Notes the request id the hub returned; a failure that arrived before it is applied now.</summary>
    public void Accepted(long sequence, Guid requestId)
    {
        if (!_pending.TryGetValue(sequence, out var pending))
        {
            return;
        }

        pending.RequestId = requestId;
        pending.AcceptedTimestamp = Stopwatch.GetTimestamp();
        _byRequestId[requestId] = sequence;
        if (_earlyFailures.TryRemove(requestId, out string? code))
        {
            Fail(sequence, code);
        }
    }

    public void Complete(long sequence, long upstreamMicroseconds, long upstreamReceivedUs, long firstPieceTimestamp = 0)
    {
        long now = Stopwatch.GetTimestamp();
        if (!_pending.TryRemove(sequence, out var pending))
        {
            Interlocked.Increment(ref _late);
            return;
        }

        if (pending.RequestId != Guid.Empty)
        {
            _byRequestId.TryRemove(pending.RequestId, out _);
        }

        long latency = Stopwatch.GetElapsedTime(pending.DueTimestamp, now).Ticks / TimeSpan.TicksPerMicrosecond;
        lock (_gate)
        {
            _latency.RecordValue(Math.Max(1, latency));
            _overhead.RecordValue(Math.Max(1, latency - upstreamMicroseconds));
            _upstream.RecordValue(Math.Max(1, upstreamMicroseconds));
            long firstPiece = firstPieceTimestamp != 0 ? firstPieceTimestamp : pending.FirstPieceTimestamp;
            if (firstPiece != 0)
            {
                _firstPiece.RecordValue(Math.Max(1, Stopwatch.GetElapsedTime(pending.DueTimestamp, firstPiece).Ticks / TimeSpan.TicksPerMicrosecond));
            }

            _ok++;
            _lastCompletion = Math.Max(_lastCompletion, now);
            if (CollectHops && pending.AcceptedTimestamp != 0)
            {
                long accepted = pending.SentUnixMicroseconds
                    + Stopwatch.GetElapsedTime(pending.DueTimestamp, pending.AcceptedTimestamp).Ticks / TimeSpan.TicksPerMicrosecond;
                _hops.Add(new HopSample(pending.RequestId, pending.SentUnixMicroseconds, accepted, upstreamReceivedUs,
                    upstreamMicroseconds, UnixMicroseconds()));
            }
        }
    }

    public void Fail(long sequence, string code)
    {
        if (!_pending.TryRemove(sequence, out var pending))
        {
            return;
        }

        if (pending.RequestId != Guid.Empty)
        {
            _byRequestId.TryRemove(pending.RequestId, out _);
        }

        lock (_gate)
        {
            _errors[code] = _errors.GetValueOrDefault(code) + 1;
        }
    }

    /// <summary>Notes the first streamed piece of a request whose id the hub has returned.</summary>
    public void Piece(Guid requestId, long timestamp)
    {
        if (_byRequestId.TryGetValue(requestId, out long sequence) && _pending.TryGetValue(sequence, out var pending)
            && pending.FirstPieceTimestamp == 0)
        {
            pending.FirstPieceTimestamp = timestamp;
        }
    }

    /// <summary>A PromptFailed for a request id; it may come before the hub returned that id.</summary>
    public void FailByRequestId(Guid requestId, string code)
    {
        if (_byRequestId.TryRemove(requestId, out long sequence))
        {
            Fail(sequence, code);
        }
        else
        {
            _earlyFailures[requestId] = code;
        }
    }

    /// <summary>Counts every prompt still in flight as a timeout.</summary>
    public void ExpireRemaining()
    {
        foreach (long sequence in _pending.Keys)
        {
            Fail(sequence, "timeout");
        }
    }

    public StepResult Result(PhaseUsage usage)
    {
        lock (_gate)
        {
            double seconds = _lastCompletion > StartTimestamp
                ? Stopwatch.GetElapsedTime(StartTimestamp, _lastCompletion).TotalSeconds
                : 0;
            return new StepResult(
                Mode,
                Rate,
                Stream,
                Sent,
                _ok,
                _errors.Values.Sum(),
                new Dictionary<string, int>(_errors),
                seconds > 0 ? _ok / seconds : 0,
                Percentiles.Of(_overhead),
                Percentiles.Of(_latency),
                Percentiles.Of(_upstream),
                Percentiles.Of(_sendLag),
                _firstPiece.TotalCount > 0 ? Percentiles.Of(_firstPiece) : null,
                usage,
                [.. _hops]);
        }
    }

    public static long UnixMicroseconds() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) / TimeSpan.TicksPerMicrosecond;
}

/// <summary>Percentiles in milliseconds.</summary>
public sealed record Percentiles(long Count, double P50, double P95, double P99, double Max, double Mean)
{
    public static readonly Percentiles Empty = new(0, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);

    public static Percentiles Of(LongHistogram histogram) => histogram.TotalCount == 0
        ? Empty
        : new Percentiles(
            histogram.TotalCount,
            histogram.GetValueAtPercentile(50) / 1000.0,
            histogram.GetValueAtPercentile(95) / 1000.0,
            histogram.GetValueAtPercentile(99) / 1000.0,
            histogram.GetMaxValue() / 1000.0,
            histogram.GetMean() / 1000.0);
}

public sealed record StepResult(
    string Mode,
    double Rate,
    bool Stream,
    long Sent,
    long Ok,
    long Errors,
    IReadOnlyDictionary<string, int> ErrorCodes,
    double Throughput,
    Percentiles Overhead,
    Percentiles Latency,
    Percentiles Upstream,
    Percentiles SendLag,
    Percentiles? FirstPiece,
    PhaseUsage Usage,
    IReadOnlyList<HopSample> Hops)
{
    /// <summary>The load criterion of the targets: no errors and a p99 overhead under 100 ms.</summary>
    public bool Passes => Errors == 0 && Ok > 0 && Overhead.P99 < 100;

    /// <summary>So far past saturation that higher rates would only pile up a backlog.</summary>
    public bool Collapsed => Sent > 0 && (Errors > Sent / 20 || Overhead.P99 > 2000);
}
