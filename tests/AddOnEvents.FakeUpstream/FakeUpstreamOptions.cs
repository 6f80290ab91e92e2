namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// How a <see cref="FakeUpstream"/> listens and behaves. The defaults are what the tests expect: a free loopback
/// port, no added latency, every request recorded, only keys registered with <see cref="FakeUpstream.AcceptKey"/>.
/// </summary>
public sealed record FakeUpstreamOptions
{
    /// <summary>Value of the <c>x-fake-upstream-us</c> response header: microseconds the fake spent before replying.</summary>
    public const string TimingHeader = "x-fake-upstream-us";

    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port to listen on; 0 picks a free one.</summary>
    public int Port { get; init; }

    /// <summary>Pause before every reply (after the request body was read), standing in for the model's thinking time.</summary>
    public TimeSpan Latency { get; init; }

    /// <summary>
    /// Pace of a streamed completion that has no <see cref="ScriptedResponse.PieceDelay"/>: content pieces per second,
    /// scheduled from the first piece so that slow timers do not add up. 0 sends the pieces as fast as possible.
    /// </summary>
    public double PiecesPerSecond { get; init; }

    /// <summary>
    /// Keeps every request for <see cref="FakeUpstream.Requests"/> and <see cref="FakeUpstream.WaitForRequestAsync"/>.
    /// A long benchmark turns it off, or the list grows with every request.
    /// </summary>
    public bool RecordRequests { get; init; } = true;

    /// <summary>Accepts any non-empty bearer key, as a benchmark needs; a missing key still gets 401.</summary>
    public bool AcceptAnyKey { get; init; }

    /// <summary>
    /// Reports the fake's own time per request, so a client can subtract it from what it observed: the
    /// <see cref="TimingHeader"/> header, and a marker such as <c> [fake rx=1733330000123456 us=50123]</c> at the end
    /// of every completion text (the last content piece of a stream). <c>rx</c> is when the request reached the
    /// handler, in microseconds since the Unix epoch; <c>us</c> is the time from then until the marker was written.
    /// </summary>
    public bool ReportTiming { get; init; }
}
