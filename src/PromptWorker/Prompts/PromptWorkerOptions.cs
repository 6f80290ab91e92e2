using System.ComponentModel.DataAnnotations;

namespace AddOnEvents.PromptWorker.Prompts;

public sealed class PromptWorkerOptions
{
    public const string SectionName = "PromptWorker";

    /// <summary>
    /// How long a worker's claim on a request lasts without renewal. A redelivered message waits this long at most
    /// before another worker takes over from one that died.
    /// </summary>
    [Range(2, 600)]
    public int ClaimLeaseSeconds { get; set; } = 20;

    /// <summary>How long answers stay fetchable by request id for clients that were offline.</summary>
    [Range(10, 86_400)]
    public int ResultRetentionSeconds { get; set; } = 600;

    /// <summary>A streamed answer is sent on at least this often, in milliseconds, while text arrives.</summary>
    [Range(10, 5_000)]
    public int PieceIntervalMilliseconds { get; set; } = 100;

    /// <summary>A piece is sent early once it holds this many characters.</summary>
    [Range(1, 100_000)]
    public int PieceMaxCharacters { get; set; } = 400;

    /// <summary>Seconds between sweeps that delete expired results and counters.</summary>
    [Range(1, 3600)]
    public int CleanupIntervalSeconds { get; set; } = 60;

    /// <summary>Database retries before a prompt is failed, so a prompt never waits in an error queue.</summary>
    [Range(0, 50)]
    public int DatabaseRetryLimit { get; set; } = 5;
}
