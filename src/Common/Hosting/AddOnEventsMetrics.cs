using System.Diagnostics;
using System.Diagnostics.Metrics;
using AddOnEvents.Contracts;

namespace AddOnEvents.Common.Hosting;

/// <summary>
/// AddOnEvents' own instruments. Tag values are app ids, stable error codes and fixed words. They are never a request
/// id, a user id or pseudonym, a model name typed by a caller, or any text, so every series stays small and nothing
/// personal reaches a metrics store. Histograms carry no app id, because each of their series costs a bucket per
/// boundary.
/// </summary>
public sealed class AddOnEventsMetrics
{
    /// <summary>The <c>outcome</c> of a prompt that got an answer. Failures carry their stable error code instead.</summary>
    public const string Completed = "completed";

    private readonly Counter<long> _prompts;
    private readonly Counter<long> _tokens;
    private readonly Histogram<double> _upstreamDuration;
    private readonly Histogram<double> _overhead;
    private readonly Histogram<double> _queueLag;

    public AddOnEventsMetrics(IMeterFactory meterFactory)
    {
        var meter = meterFactory.Create(Telemetry.Name);
        _prompts = meter.CreateCounter<long>("addonevents.prompts", "{prompt}",
            "Prompts that received their final result, by outcome and app.");
        _tokens = meter.CreateCounter<long>("addonevents.tokens", "{token}",
            "Tokens the upstream counted for answered prompts, by app and type (input or output).");
        // The boundaries follow what each one measures: overhead aims at milliseconds, the upstream at seconds.
        _upstreamDuration = meter.CreateHistogram("addonevents.upstream.duration", "s",
            "Duration of one call to the upstream chat completions API, to the last byte of the answer.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300] });
        _overhead = meter.CreateHistogram("addonevents.prompt.overhead", "s",
            "Time PromptWorker spent on a prompt besides waiting for the upstream: from consume start to the published result.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5] });
        _queueLag = meter.CreateHistogram("addonevents.queue.lag", "s",
            "Time from Ingress accepting a prompt to PromptWorker starting on it; clock skew between hosts adds to it.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30] });
    }

    /// <summary>Counts a prompt's final result and records the time AddOnEvents itself spent on it.</summary>
    public void PromptFinished(string appId, string outcome, TimeSpan overhead)
    {
        _prompts.Add(1, new TagList { { "outcome", outcome }, { "app_id", appId } });
        _overhead.Record(Math.Max(0, overhead.TotalSeconds), new KeyValuePair<string, object?>("outcome", outcome));
    }

    public void TokensUsed(string appId, TokenUsage usage)
    {
        _tokens.Add(usage.PromptTokens, new TagList { { "app_id", appId }, { "type", "input" } });
        _tokens.Add(usage.CompletionTokens, new TagList { { "app_id", appId }, { "type", "output" } });
    }

    public void UpstreamCalled(string outcome, bool streaming, TimeSpan duration) =>
        _upstreamDuration.Record(duration.TotalSeconds, new KeyValuePair<string, object?>("outcome", outcome),
            new KeyValuePair<string, object?>("stream", streaming));

    public void QueueLag(TimeSpan lag) => _queueLag.Record(Math.Max(0, lag.TotalSeconds));
}
