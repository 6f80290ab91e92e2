// MassTransit routes by full type name, so these records keep their names and this namespace once shipped.
namespace AddOnEvents.Contracts;

/// <summary>A developer submitted an OpenAI key; the key travels sealed to KeyWorker's public key.</summary>
public sealed record KeyRegistered(
    Guid CorrelationId,
    string AppId,
    long KeyVersion,
    SealedSecret SealedKey,
    DateTimeOffset RegisteredAt);

/// <summary>KeyWorker finished handling one key version: stored, rejected by the provider, or removed.</summary>
public sealed record KeyStatusChanged(
    Guid CorrelationId,
    string AppId,
    long KeyVersion,
    string State,
    string? Hint,
    string? ReasonCode,
    DateTimeOffset ChangedAt);

/// <summary>
/// An end user asked for a chat completion. <see cref="UserId"/> is a pseudonym of the host's user id;
/// <see cref="ReplyTo"/> is the routing key of the Ingress instance that holds the user's connection.
/// </summary>
public sealed record PromptRequested(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    string ReplyTo,
    string Model,
    int MaxOutputTokens,
    IReadOnlyList<ChatTurn> Messages,
    DateTimeOffset RequestedAt,
    DateTimeOffset ExpiresAt,
    bool Stream = false)
{
    /// <summary>The end user's monthly token allowance, when the host set one; PromptWorker reports crossing its threshold.</summary>
    public UserAllowance? Allowance { get; init; }

    /// <summary>The host's own user id, encrypted so that only Ingress can read it back (for the host's webhook).</summary>
    public byte[]? SealedUserRef { get; init; }

    /// <summary>
    /// Flag set when the app has a token quota. The answer's usage is then stored before the answer goes out, because
    /// the user's next prompt is checked against it. Without a quota the answer goes out first.
    /// </summary>
    public bool UsageLimited { get; init; }

    /// <summary>Sampling parameters of an OpenAI-style request, or null for prompts that set none, such as older messages.</summary>
    public SamplingOptions? Sampling { get; init; }
}

/// <summary>
/// OpenAI chat sampling parameters as the caller set them, checked by Ingress. A null field is left out of the
/// upstream request, so the provider's default applies.
/// </summary>
public sealed record SamplingOptions
{
    public double? Temperature { get; init; }

    public double? TopP { get; init; }

    /// <summary>Up to 4 sequences at which the upstream stops generating.</summary>
    public IReadOnlyList<string>? Stop { get; init; }

    public int? Seed { get; init; }

    public double? PresencePenalty { get; init; }

    public double? FrequencyPenalty { get; init; }

    /// <summary>The response_format type: "text" or "json_object".</summary>
    public string? ResponseFormat { get; init; }
}

/// <summary>A token allowance per calendar month (UTC) and the share of it, in percent, at which the host is told.</summary>
public sealed record UserAllowance(long MonthlyTokens, int ThresholdPercent);

/// <summary>An end user's usage this month crossed the host's threshold share of their allowance.</summary>
public sealed record AllowanceThresholdCrossed(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    string ReplyTo,
    long UsedTokens,
    long MonthlyTokens,
    int ThresholdPercent,
    string Period,
    byte[]? SealedUserRef,
    DateTimeOffset CrossedAt);

/// <summary>
/// A piece of a streamed answer. Pieces of one run carry consecutive sequence numbers from 0; the final
/// <see cref="PromptCompleted"/> carries the whole text and supersedes them.
/// </summary>
/// <param name="Attempt">
/// The first upstream attempt of the run that produced the piece. A worker that takes over the prompt after another
/// died, or a redelivery after a broker failure, starts a new run with a higher number. That run numbers its pieces
/// from 0 again, so a reader drops the pieces of the older run.
/// </param>
public sealed record PromptPiece(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    string ReplyTo,
    int Sequence,
    string Text,
    int Attempt = 1);

/// <summary>The user who sent a prompt asked to stop it; every PromptWorker instance hears this.</summary>
public sealed record PromptCancelled(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    DateTimeOffset CancelledAt);

/// <summary>The upstream answered a prompt.</summary>
public sealed record PromptCompleted(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    string ReplyTo,
    string Text,
    string FinishReason,
    TokenUsage Usage,
    DateTimeOffset CompletedAt);

/// <summary>A prompt ended without an answer; <see cref="Message"/> is written by AddOnEvents, never by the upstream.</summary>
public sealed record PromptFailed(
    Guid CorrelationId,
    Guid RequestId,
    string AppId,
    string UserId,
    string ReplyTo,
    string Code,
    string Message,
    int? RetryAfterSeconds,
    DateTimeOffset FailedAt);

/// <summary>One message of a chat conversation, with an OpenAI role name (system, user, assistant).</summary>
public sealed record ChatTurn(string Role, string Content);

/// <summary>Token counts as reported by the upstream.</summary>
public sealed record TokenUsage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>
/// A secret encrypted to a recipient's P-256 public key: ECDH with an ephemeral key, HKDF-SHA256, AES-256-GCM.
/// </summary>
/// <param name="RecipientKeyId">Identifies which recipient key pair can open it.</param>
/// <param name="EphemeralPublicKey">SubjectPublicKeyInfo of the sender's one-time key.</param>
public sealed record SealedSecret(
    string RecipientKeyId,
    byte[] EphemeralPublicKey,
    byte[] Nonce,
    byte[] Ciphertext,
    byte[] Tag);
