using AddOnEvents.Common.Storage;
using AddOnEvents.Ingress.Crypto;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Ingress.Webhooks;

/// <summary>
/// A webhook delivery that is waiting for its next attempt. The body is encrypted, because it contains the host's user
/// id. The URL and the signing secret are not stored here: each attempt reads them from the app, so a retry goes to
/// the URL the host saved since.
/// </summary>
public sealed class WebhookOutboxEntry
{
    /// <summary>The event id, which is also the body's <c>id</c>, so a redelivered event is stored once.</summary>
    [BsonId]
    public Guid Id { get; set; }

    public string AppId { get; set; } = "";

    /// <summary>The user's pseudonym within the app, under which erasure finds the entry.</summary>
    public string UserPseudonym { get; set; } = "";

    /// <summary>Time the threshold was crossed, which names the usage month whose counter must still exist.</summary>
    public DateTime CrossedAt { get; set; }

    public byte[] SealedBody { get; set; } = [];

    /// <summary>Attempts started so far, including one that a stopped instance may not have finished.</summary>
    public int Attempts { get; set; }

    public DateTime NextAttemptAt { get; set; }

    /// <summary>Random token of the current claim, or empty while no attempt runs.</summary>
    public string LeaseToken { get; set; } = "";

    public DateTime LeaseUntil { get; set; }

    public DateTime ExpiresAt { get; set; }
}

/// <summary>A claimed outbox entry with its body decrypted.</summary>
public sealed record ClaimedDelivery(WebhookOutboxEntry Entry, string Body);

/// <summary>
/// The <c>webhookDeliveries</c> collection: webhook deliveries that are waiting for an attempt, shared by every Ingress
/// instance, so a delivery outlives the instance that accepted it. An instance claims a due entry with a lease before
/// it sends, so two instances never make the same attempt at once. Writes use the majority write concern of the
/// injected database, because the event is acknowledged to the broker once its delivery is stored here.
/// </summary>
public sealed class WebhookOutbox(IMongoDatabase database, WebhookSecretCipher cipher)
{
    /// <summary>
    /// How long an entry is kept in all. The retry window is about a minute (waits of 21 s and up to four 10-second
    /// timeouts), so this leaves room for a few lease takeovers after a crash but stops a delivery from outliving it by much.
    /// </summary>
    public static readonly TimeSpan Retention = TimeSpan.FromMinutes(10);

    private const string BodyField = "body";

    private readonly IMongoCollection<WebhookOutboxEntry> _entries = database.GetCollection<WebhookOutboxEntry>("webhookDeliveries");

    /// <summary>
    /// Stores a delivery due at once. Returns false when an entry with this event id is already stored, because the
    /// broker redelivered the event.
    /// </summary>
    public async Task<bool> AddAsync(Guid eventId, string appId, string userPseudonym, DateTime crossedAt, string body,
        DateTime now, CancellationToken cancellationToken)
    {
        var entry = new WebhookOutboxEntry
        {
            Id = eventId,
            AppId = appId,
            UserPseudonym = userPseudonym,
            CrossedAt = crossedAt,
            SealedBody = cipher.SealDeliveryField(appId, eventId, BodyField, body),
            NextAttemptAt = now,
            LeaseUntil = DateTime.MinValue,
            ExpiresAt = now + Retention,
        };
        try
        {
            await _entries.InsertOneAsync(entry, cancellationToken: cancellationToken);
            return true;
        }
        catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
        {
            return false;
        }
    }

    /// <summary>
    /// Claims one entry that is due, not leased and not expired, counts the attempt and leases it until
    /// <paramref name="now"/> + <paramref name="lease"/>. Returns null when none is due. An entry whose body does not
    /// decrypt is returned with an empty body, so the caller can drop it.
    /// </summary>
    public async Task<ClaimedDelivery?> ClaimDueAsync(DateTime now, TimeSpan lease, CancellationToken cancellationToken)
    {
        var filter = Builders<WebhookOutboxEntry>.Filter;
        var due = filter.Lte(e => e.NextAttemptAt, now) & filter.Lte(e => e.LeaseUntil, now) & filter.Gt(e => e.ExpiresAt, now);
        var claim = Builders<WebhookOutboxEntry>.Update
            .Set(e => e.LeaseToken, Guid.NewGuid().ToString("N"))
            .Set(e => e.LeaseUntil, now + lease)
            .Inc(e => e.Attempts, 1);
        var entry = await _entries.FindOneAndUpdateAsync(due, claim,
            new FindOneAndUpdateOptions<WebhookOutboxEntry> { ReturnDocument = ReturnDocument.After }, cancellationToken);
        if (entry is null)
        {
            return null;
        }

        string body = cipher.OpenDeliveryField(entry.AppId, entry.Id, BodyField, entry.SealedBody) ?? "";
        return new ClaimedDelivery(entry, body);
    }

    /// <summary>Ends the claim and schedules the next attempt, unless another claim took the entry over since.</summary>
    public Task RescheduleAsync(WebhookOutboxEntry claimed, DateTime nextAttemptAt, CancellationToken cancellationToken) =>
        _entries.UpdateOneAsync(Claimed(claimed),
            Builders<WebhookOutboxEntry>.Update
                .Set(e => e.NextAttemptAt, nextAttemptAt)
                .Set(e => e.LeaseToken, "")
                .Set(e => e.LeaseUntil, DateTime.MinValue),
            cancellationToken: cancellationToken);

    /// <summary>Deletes a claimed entry, unless another claim took it over since.</summary>
    public Task DeleteClaimedAsync(WebhookOutboxEntry claimed, CancellationToken cancellationToken) =>
        _entries.DeleteOneAsync(Claimed(claimed), cancellationToken);

    /// <summary>Returns the pending deliveries that name this user of the app, soonest attempt first.</summary>
    public Task<List<WebhookOutboxEntry>> FindUserAsync(string appId, string userPseudonym, CancellationToken cancellationToken) =>
        _entries.Find(e => e.AppId == appId && e.UserPseudonym == userPseudonym).SortBy(e => e.NextAttemptAt).ToListAsync(cancellationToken);

    /// <summary>Deletes every pending delivery that names this user of the app, and returns how many.</summary>
    public async Task<long> DeleteUserAsync(string appId, string userPseudonym, CancellationToken cancellationToken) =>
        (await _entries.DeleteManyAsync(e => e.AppId == appId && e.UserPseudonym == userPseudonym, cancellationToken)).DeletedCount;

    public async Task<long> DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        (await _entries.DeleteManyAsync(e => e.AppId == appId, cancellationToken)).DeletedCount;

    public async Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        (await _entries.DeleteManyAsync(e => e.ExpiresAt <= now, cancellationToken)).DeletedCount;

    /// <summary>
    /// Creates the TTL index on the expiry, the index that erasure uses and the one that claims use. The explicit
    /// cleanup path that <see cref="ExpiryIndex"/> requires is <see cref="DeleteExpiredAsync"/>, which
    /// <see cref="WebhookSender"/> calls on a timer.
    /// </summary>
    public async Task EnsureIndexesAsync(CancellationToken cancellationToken)
    {
        var keys = Builders<WebhookOutboxEntry>.IndexKeys;
        await ExpiryIndex.EnsureAsync(_entries, e => e.ExpiresAt, cancellationToken);
        await _entries.Indexes.CreateOneAsync(
            new CreateIndexModel<WebhookOutboxEntry>(keys.Ascending(e => e.AppId).Ascending(e => e.UserPseudonym)), cancellationToken: cancellationToken);
        await _entries.Indexes.CreateOneAsync(
            new CreateIndexModel<WebhookOutboxEntry>(keys.Ascending(e => e.NextAttemptAt)), cancellationToken: cancellationToken);
    }

    private static FilterDefinition<WebhookOutboxEntry> Claimed(WebhookOutboxEntry claimed) =>
        Builders<WebhookOutboxEntry>.Filter.Eq(e => e.Id, claimed.Id) & Builders<WebhookOutboxEntry>.Filter.Eq(e => e.LeaseToken, claimed.LeaseToken);
}
