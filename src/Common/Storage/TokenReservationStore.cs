using AddOnEvents.Contracts;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>The tokens reserved for one admitted prompt on the counters of the limits it was checked against.</summary>
public sealed class TokenReservation
{
    [BsonId]
    public Guid RequestId { get; set; }

    public string AppId { get; set; } = "";

    /// <summary>The end user's pseudonym, so that erasing the user releases the reservations of their prompts.</summary>
    public string UserId { get; set; } = "";

    public List<string> Counters { get; set; } = [];

    public long Tokens { get; set; }

    /// <summary>The time after which the sweep releases the reservation of a prompt that never finished, for example after a worker crash.</summary>
    public DateTime ExpiresAt { get; set; }
}

/// <summary>
/// Reserves a prompt's maximum cost against the app's token quotas and the user's allowance from admission until the
/// prompt finishes. Without reservations, every prompt admitted while the counters were below a limit could run at
/// once, so many users together could pass the app's quota by many prompts. With them, a limit is passed by at most
/// one prompt. Each reservation is a document of its own, so it is released once however often a prompt is delivered.
/// </summary>
public sealed class TokenReservationStore(IMongoDatabase database, UsageStore usage)
{
    private readonly IMongoCollection<TokenReservation> _reservations = database.GetCollection<TokenReservation>("tokenReservations");

    /// <summary>
    /// Reserves <paramref name="tokens"/> on every counter, or on none, and returns the first counter that had no
    /// room left, or null when all of them had room.
    /// </summary>
    /// <remarks>
    /// It takes no cancellation token: a request cancelled between its writes would leave counters reserved with no
    /// record to release them, for example when a client disconnects while its prompt is admitted.
    /// </remarks>
    public async Task<QuotaCounter?> TryReserveAsync(Guid requestId, string appId, string userId, IReadOnlyList<QuotaCounter> counters,
        long tokens, DateTime expiresAt)
    {
        // The record goes first. If this process stops before the counters are written, the sweep releases tokens
        // that were never reserved, so at most one more prompt gets in. The other order would block the reserved
        // tokens until the counter's period ends.
        await _reservations.InsertOneAsync(new TokenReservation
        {
            RequestId = requestId,
            AppId = appId,
            UserId = userId,
            Counters = counters.Select(c => c.Counter.Id).ToList(),
            Tokens = tokens,
            ExpiresAt = expiresAt,
        }, cancellationToken: CancellationToken.None);

        var reserved = new List<string>(counters.Count);
        foreach (var counter in counters)
        {
            bool room;
            try
            {
                room = await usage.TryReserveAsync(counter, tokens, CancellationToken.None);
            }
            catch
            {
                // The failed write may have been applied, so its counter is released too. Releasing tokens that were
                // never reserved lets at most one more prompt in, while keeping them would block them for the period.
                await UndoAsync(requestId, [.. reserved, counter.Counter.Id], tokens);
                throw;
            }

            if (!room)
            {
                await UndoAsync(requestId, reserved, tokens);
                return counter;
            }

            reserved.Add(counter.Counter.Id);
        }

        return null;
    }

    /// <summary>Releases the prompt's reservation. Only the first call for a prompt finds it, so later calls change nothing.</summary>
    public async Task ReleaseAsync(Guid requestId, CancellationToken cancellationToken)
    {
        var reservation = await _reservations.FindOneAndDeleteAsync(r => r.RequestId == requestId, cancellationToken: cancellationToken);
        if (reservation is not null)
        {
            await ReleaseCountersAsync(reservation);
        }
    }

    /// <summary>Releases the reservations that outlived their expiry and returns their number.</summary>
    public async Task<long> ReleaseExpiredAsync(DateTime now, CancellationToken cancellationToken)
    {
        long released = 0;
        while (await _reservations.FindOneAndDeleteAsync(r => r.ExpiresAt < now, cancellationToken: cancellationToken) is { } reservation)
        {
            await ReleaseCountersAsync(reservation);
            released++;
        }

        return released;
    }

    /// <summary>Releases every reservation of one end user's prompts and returns their number.</summary>
    public async Task<long> ReleaseUserAsync(string appId, string userId, CancellationToken cancellationToken)
    {
        long released = 0;
        while (await _reservations.FindOneAndDeleteAsync(r => r.AppId == appId && r.UserId == userId, cancellationToken: cancellationToken) is { } reservation)
        {
            await ReleaseCountersAsync(reservation);
            released++;
        }

        return released;
    }

    /// <summary>Returns the reservations of one end user's running prompts.</summary>
    public Task<List<TokenReservation>> FindUserAsync(string appId, string userId, CancellationToken cancellationToken) =>
        _reservations.Find(r => r.AppId == appId && r.UserId == userId).ToListAsync(cancellationToken);

    /// <summary>Deletes the reservations of a removed app, whose counters are deleted too.</summary>
    public Task DeleteAppAsync(string appId, CancellationToken cancellationToken) => _reservations.DeleteManyAsync(r => r.AppId == appId, cancellationToken);

    /// <summary>
    /// Creates an index on the expiry for the sweep. It is not a TTL index, because MongoDB would then delete
    /// reservations without releasing their tokens on the counters.
    /// </summary>
    public Task EnsureIndexesAsync(CancellationToken cancellationToken) =>
        _reservations.Indexes.CreateOneAsync(new CreateIndexModel<TokenReservation>(Builders<TokenReservation>.IndexKeys.Ascending(r => r.ExpiresAt)),
            cancellationToken: cancellationToken);

    // Once the record is deleted, no other caller can release these tokens, so a cancelled caller must not stop this.
    private Task ReleaseCountersAsync(TokenReservation reservation) =>
        usage.ReleaseReservedAsync(reservation.Counters, reservation.Tokens, CancellationToken.None);

    private async Task UndoAsync(Guid requestId, List<string> reserved, long tokens)
    {
        await _reservations.DeleteOneAsync(r => r.RequestId == requestId, CancellationToken.None);
        await usage.ReleaseReservedAsync(reserved, tokens, CancellationToken.None);
    }
}

/// <summary>Estimates of token counts from text length, for completions whose upstream reports none.</summary>
public static class TokenEstimate
{
    /// <summary>
    /// NOTE: about 4 characters per token, OpenAI's rule of thumb for English text. Text in other languages and code
    /// often needs more tokens per character, so this can count too few.
    /// </summary>
    public static int FromCharacters(long characters) => (int)Math.Min(int.MaxValue, (characters + 3) / 4);

    /// <summary>
    /// Returns a bound on the tokens that the prompt's messages can count as. Each token of OpenAI's byte-level
    /// tokenizers covers at least one UTF-8 byte, so the bound is one token per byte. Each message adds 8 for the chat
    /// format's own tokens, an estimate above the 3 or 4 that OpenAI documents. Users choose the text, so a bound
    /// must also hold for text that needs more tokens per character than English.
    /// </summary>
    public static long MaxPromptTokens(IEnumerable<ChatTurn> turns) =>
        turns.Sum(turn => (long)System.Text.Encoding.UTF8.GetByteCount(turn.Content) + 8);

    /// <summary>Estimates the usage of a prompt and of the answer text it got.</summary>
    public static TokenUsage Of(PromptRequested prompt, long answerCharacters)
    {
        int promptTokens = FromCharacters(prompt.Messages.Sum(turn => (long)turn.Content.Length));
        int completionTokens = FromCharacters(answerCharacters);
        return new TokenUsage(promptTokens, completionTokens, promptTokens + completionTokens);
    }
}
