using HdrHistogram;

namespace AddOnEvents.Bench;

/// <summary>
/// Splits each prompt's trip into hops by lining up wall-clock times from four processes on one machine: the client,
/// Ingress and PromptWorker (MassTransit's sentTime), the broker tap (arrival), and the fake upstream (rx and us).
/// </summary>
public static class HopBreakdown
{
    public static IReadOnlyList<HopRow> Compute(IReadOnlyList<HopSample> samples, IReadOnlyDictionary<Guid, TapTimes> requested,
        IReadOnlyDictionary<Guid, TapTimes> completed)
    {
        var hops = new (string Name, Func<HopSample, TapTimes, TapTimes, long> Measure)[]
        {
            ("1. Client sends; hub receives, checks, starts the publish (Ingress)", (s, r, _) => r.SentUs - s.SentUs),
            ("2. Broker routes PromptRequested to a queue (publish to tap arrival)", (_, r, _) => r.ArrivedUs - r.SentUs),
            ("3. Queue wait; PromptWorker consumes, reads and decrypts the key, sends HTTP", (s, r, _) => s.UpstreamReceivedUs - r.ArrivedUs),
            ("4. Fake upstream's own time (not overhead)", (s, _, _) => s.UpstreamMicroseconds),
            ("5. PromptWorker reads the answer, publishes PromptCompleted", (s, _, c) => c.SentUs - (s.UpstreamReceivedUs + s.UpstreamMicroseconds)),
            ("6. Broker routes PromptCompleted (publish to tap arrival)", (_, _, c) => c.ArrivedUs - c.SentUs),
            ("7. Ingress consumes, pushes over the hub, client receives", (s, _, c) => s.DeliveredUs - c.ArrivedUs),
            ("Overhead: 1-7 without 4", (s, _, _) => s.DeliveredUs - s.SentUs - s.UpstreamMicroseconds),
            ("In parallel: SendPrompt returns the request id (includes the publisher confirm)", (s, _, _) => s.AcceptedUs - s.SentUs),
        };

        var histograms = hops.Select(_ => new LongHistogram(1, 3_600_000_000, 3)).ToArray();
        long joined = 0;
        foreach (var sample in samples)
        {
            if (!requested.TryGetValue(sample.RequestId, out var r) || !completed.TryGetValue(sample.RequestId, out var c))
            {
                continue;
            }

            joined++;
            for (int index = 0; index < hops.Length; index++)
            {
                histograms[index].RecordValue(Math.Max(1, hops[index].Measure(sample, r, c)));
            }
        }

        return hops.Select((hop, index) => new HopRow(
                hop.Name,
                joined == 0 ? double.NaN : histograms[index].GetValueAtPercentile(50) / 1000.0,
                joined == 0 ? double.NaN : histograms[index].GetValueAtPercentile(99) / 1000.0,
                joined))
            .ToList();
    }
}
