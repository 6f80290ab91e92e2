using AddOnEvents.Common.Crypto;
using AddOnEvents.Contracts;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>The one current key document of an app. Nothing else about the key is stored.</summary>
public sealed class KeyDocument
{
    [BsonId]
    public string AppId { get; set; } = "";

    /// <summary>Newest registered version; a write for an older version never replaces a newer one.</summary>
    public long Version { get; set; }

    public string State { get; set; } = KeyStates.Pending;

    public string? Hint { get; set; }

    public string? ReasonCode { get; set; }

    public DateTime UpdatedAt { get; set; }

    public DateTime? CheckedAt { get; set; }

    /// <summary>
    /// The key that prompts use. It lags behind <see cref="Version"/> while a replacement is pending and after a
    /// replacement was rejected, so the previous key keeps serving until a replacement is stored. It is removed once
    /// the provider rejects it after it was stored, so a rejected key never serves again.
    /// </summary>
    public StoredKeyMaterial? Material { get; set; }

    /// <summary>
    /// Version of the last stored key that the provider rejected after it was stored, or null. Registering a
    /// replacement leaves it set, so prompts fail with key_invalid rather than no_key_configured while the
    /// replacement is pending.
    /// </summary>
    public long? RejectedVersion { get; set; }

    /// <summary>Number of re-checks of an unverified key made so far. Every registration resets it.</summary>
    public int RecheckAttempts { get; set; }

    /// <summary>Time at which KeyWorker checks the unverified key again, or null when no re-check is scheduled.</summary>
    public DateTime? NextCheckAt { get; set; }

    /// <summary>
    /// Returns whether prompts can use the stored key, which requires that a key is stored and that it is not the
    /// version the provider rejected.
    /// </summary>
    /// <remarks>
    /// NOTE: the version comparison covers documents written before rejected keys were removed. Such a rejected key
    /// serves again once a replacement is pending, because the pending state hides the rejection.
    /// </remarks>
    public bool HasUsableKey() => Material is not null && !(State == KeyStates.Invalid && Version == Material.Version);

    /// <summary>Returns whether the provider rejected the last stored key, which is removed, while a replacement is pending.</summary>
    public bool IsRejectedKeyPendingReplacement() => State == KeyStates.Pending && Material is null && RejectedVersion is not null;
}

/// <summary>An encrypted provider key with a keyed fingerprint (HMAC-SHA256) of its plaintext.</summary>
public sealed class StoredKeyMaterial
{
    public long Version { get; set; }

    public string Fingerprint { get; set; } = "";

    /// <summary>
    /// The masked hint of this key, so the status can name the key that serves while a newer version is pending or
    /// was rejected. Null for material stored before the hint was kept here.
    /// </summary>
    public string? Hint { get; set; }

    public string MasterKeyId { get; set; } = "";

    public byte[] WrappedDataKey { get; set; } = [];

    public byte[] Nonce { get; set; } = [];

    public byte[] Ciphertext { get; set; } = [];

    public static StoredKeyMaterial From(EncryptedKey key, long version, string fingerprint, string? hint) => new()
    {
        Version = version,
        Fingerprint = fingerprint,
        Hint = hint,
        MasterKeyId = key.DataKey.MasterKeyId,
        WrappedDataKey = key.DataKey.Blob,
        Nonce = key.Nonce,
        Ciphertext = key.Ciphertext,
    };

    public EncryptedKey ToEncryptedKey() => new(new WrappedDataKey(MasterKeyId, WrappedDataKey), Nonce, Ciphertext);
}

/// <summary>Per-app counter of key versions, and the version at which the key was last deleted.</summary>
public sealed class KeyVersionCounter
{
    [BsonId]
    public string AppId { get; set; } = "";

    public long Latest { get; set; }

    public long DeletedAt { get; set; }
}

/// <summary>
/// Reads and writes the <c>keys</c> collection. Every write names the version it belongs to, so redelivered or
/// reordered messages cannot bring back an older or deleted key.
/// </summary>
public sealed class KeyStore(IMongoDatabase database)
{
    private readonly IMongoCollection<KeyDocument> _keys = database.GetCollection<KeyDocument>("keys");
    private readonly IMongoCollection<KeyVersionCounter> _versions = database.GetCollection<KeyVersionCounter>("keyVersions");

    private static readonly StoredField<KeyDocument, string> AppIdField = new(k => k.AppId);

    public Task<KeyDocument?> FindAsync(string appId, CancellationToken cancellationToken) =>
        _keys.Find(Builders<KeyDocument>.Filter.Eq(AppIdField, appId)).FirstOrDefaultAsync(cancellationToken)!;

    /// <summary>Returns a new key version for the app, higher than every version handed out before.</summary>
    public async Task<long> AllocateVersionAsync(string appId, CancellationToken cancellationToken)
    {
        var counter = await _versions.FindOneAndUpdateAsync<KeyVersionCounter>(
            c => c.AppId == appId,
            Builders<KeyVersionCounter>.Update.Inc(c => c.Latest, 1).SetOnInsert(c => c.DeletedAt, 0),
            new FindOneAndUpdateOptions<KeyVersionCounter> { IsUpsert = true, ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return counter.Latest;
    }

    /// <summary>Records a registration as pending unless a newer version is already recorded.</summary>
    public async Task MarkPendingAsync(string appId, long version, string hint, DateTime now, CancellationToken cancellationToken)
    {
        var update = Builders<KeyDocument>.Update
            .Set(k => k.Version, version)
            .Set(k => k.State, KeyStates.Pending)
            .Set(k => k.Hint, hint)
            .Set(k => k.ReasonCode, null)
            .Set(k => k.UpdatedAt, now);
        await UpsertIfNotNewerAsync(appId, version, inclusive: false, update, cancellationToken);
    }

    /// <summary>
    /// Stores the outcome of checking a key version and cancels any scheduled re-check. A null
    /// <paramref name="material"/> (a rejected key) leaves the stored key in place, so the previous key keeps serving
    /// prompts. Returns false when a newer version or a deletion won.
    /// </summary>
    public async Task<bool> StoreCheckedAsync(
        string appId,
        long version,
        string state,
        string hint,
        string? reasonCode,
        StoredKeyMaterial? material,
        DateTime now,
        CancellationToken cancellationToken)
    {
        var update = Builders<KeyDocument>.Update
            .Set(k => k.Version, version)
            .Set(k => k.State, state)
            .Set(k => k.Hint, hint)
            .Set(k => k.ReasonCode, reasonCode)
            .Set(k => k.UpdatedAt, now)
            .Set(k => k.CheckedAt, now)
            .Set(k => k.RecheckAttempts, 0)
            .Set(k => k.NextCheckAt, null);
        if (material is not null)
        {
            update = update.Set(k => k.Material, material);
        }

        if (!await UpsertIfNotNewerAsync(appId, version, inclusive: true, update, cancellationToken))
        {
            return false;
        }

        // A delete that ran while this version was being checked allocated a higher version before removing the
        // document, so reading the counter after the write tells whether this write must be undone.
        var counter = await _versions.Find(c => c.AppId == appId).FirstOrDefaultAsync(cancellationToken);
        if (counter is not null && counter.DeletedAt > version)
        {
            await _keys.DeleteOneAsync(k => k.AppId == appId && k.Version == version, cancellationToken);
            return false;
        }

        return true;
    }

    /// <summary>Tells whether this version was superseded by a newer registration or a deletion.</summary>
    public async Task<bool> IsSupersededAsync(string appId, long version, CancellationToken cancellationToken)
    {
        var counter = await _versions.Find(c => c.AppId == appId).FirstOrDefaultAsync(cancellationToken);
        return counter is not null && (counter.DeletedAt > version || counter.Latest > version);
    }

    /// <summary>Deletes the app's key document and its wrapped data key; returns false when there was none.</summary>
    public async Task<bool> DeleteAsync(string appId, CancellationToken cancellationToken)
    {
        long version = await AllocateVersionAsync(appId, cancellationToken);

        // A range filter never matches a missing field, and counters created before the field was set on insert lack it.
        var filter = Builders<KeyVersionCounter>.Filter;
        await _versions.UpdateOneAsync(
            filter.Eq(c => c.AppId, appId) & (filter.Lt(c => c.DeletedAt, version) | filter.Exists(c => c.DeletedAt, exists: false)),
            Builders<KeyVersionCounter>.Update.Set(c => c.DeletedAt, version),
            cancellationToken: cancellationToken);
        var result = await _keys.DeleteOneAsync(k => k.AppId == appId, cancellationToken);
        return result.DeletedCount > 0;
    }

    /// <summary>
    /// Removes the stored key after the upstream rejected it, unless a newer key was stored meanwhile, so prompts
    /// never call the upstream with it again. When the rejected key is the newest version, that version is also
    /// marked invalid. A newer registration, pending or rejected, keeps its own state.
    /// </summary>
    public async Task MarkRejectedAsync(string appId, long materialVersion, string reasonCode, DateTime now, CancellationToken cancellationToken)
    {
        // Both updates match only while the document still contains the rejected material, so a newer key stored
        // meanwhile wins. A newer registration recorded before the first update makes it miss, and the second update
        // then removes the material without touching the state of that registration.
        var newest = await _keys.UpdateOneAsync(
            k => k.AppId == appId && k.Version == materialVersion && k.Material != null && k.Material.Version == materialVersion,
            RemoveRejectedMaterial(materialVersion, now)
                .Set(k => k.State, KeyStates.Invalid)
                .Set(k => k.ReasonCode, reasonCode)
                .Set(k => k.CheckedAt, now),
            cancellationToken: cancellationToken);
        if (newest.MatchedCount > 0)
        {
            return;
        }

        await _keys.UpdateOneAsync(
            k => k.AppId == appId && k.Material != null && k.Material.Version == materialVersion,
            RemoveRejectedMaterial(materialVersion, now),
            cancellationToken: cancellationToken);
    }

    private static UpdateDefinition<KeyDocument> RemoveRejectedMaterial(long materialVersion, DateTime now) =>
        Builders<KeyDocument>.Update
            .Set(k => k.Material, null)
            .Set(k => k.RejectedVersion, materialVersion)
            .Set(k => k.UpdatedAt, now);

    /// <summary>Schedules the next check of an unverified key version, unless the document changed meanwhile.</summary>
    public async Task ScheduleRecheckAsync(string appId, long version, DateTime nextCheckAt, CancellationToken cancellationToken)
    {
        await _keys.UpdateOneAsync(
            k => k.AppId == appId && k.Version == version && k.State == KeyStates.Unverified,
            Builders<KeyDocument>.Update.Set(k => k.NextCheckAt, nextCheckAt),
            cancellationToken: cancellationToken);
    }

    /// <summary>
    /// Claims one unverified key whose re-check is due by moving its <see cref="KeyDocument.NextCheckAt"/> to
    /// <paramref name="leaseUntil"/>, so other KeyWorker instances skip it and a crashed check is retried after the
    /// lease. Returns the document as it was before the claim, or null when none is due.
    /// </summary>
    public Task<KeyDocument?> ClaimDueRecheckAsync(DateTime now, DateTime leaseUntil, CancellationToken cancellationToken) =>
        _keys.FindOneAndUpdateAsync<KeyDocument>(
            k => k.State == KeyStates.Unverified && k.NextCheckAt != null && k.NextCheckAt <= now && k.Material != null,
            Builders<KeyDocument>.Update.Set(k => k.NextCheckAt, leaseUntil),
            new FindOneAndUpdateOptions<KeyDocument> { ReturnDocument = ReturnDocument.Before },
            cancellationToken)!;

    /// <summary>
    /// Stores the outcome of a re-check, only if the document still contains the unverified version that was checked.
    /// <paramref name="nextCheckAt"/> schedules another re-check, or null stops them. An invalid outcome removes the
    /// key, as <see cref="MarkRejectedAsync"/> does. Returns false when the key was replaced, deleted or marked
    /// invalid meanwhile.
    /// </summary>
    public async Task<bool> StoreRecheckedAsync(
        KeyDocument checkedDocument,
        string state,
        string? reasonCode,
        int attempts,
        DateTime? nextCheckAt,
        DateTime now,
        CancellationToken cancellationToken)
    {
        long materialVersion = checkedDocument.Material!.Version;
        var update = state == KeyStates.Invalid
            ? RemoveRejectedMaterial(materialVersion, now)
            : Builders<KeyDocument>.Update.Set(k => k.UpdatedAt, now);
        var result = await _keys.UpdateOneAsync(
            k => k.AppId == checkedDocument.AppId && k.Version == checkedDocument.Version && k.State == KeyStates.Unverified
                && k.Material != null && k.Material.Version == materialVersion,
            update
                .Set(k => k.State, state)
                .Set(k => k.ReasonCode, reasonCode)
                .Set(k => k.RecheckAttempts, attempts)
                .Set(k => k.NextCheckAt, nextCheckAt)
                .Set(k => k.CheckedAt, now),
            cancellationToken: cancellationToken);
        return result.ModifiedCount > 0;
    }

    /// <summary>Returns up to <paramref name="limit"/> documents whose key is wrapped by a master key other than the given one.</summary>
    public Task<List<KeyDocument>> FindWrappedByOtherMasterKeyAsync(string masterKeyId, int limit, CancellationToken cancellationToken) =>
        _keys.Find(k => k.Material != null && k.Material.MasterKeyId != masterKeyId).Limit(limit).ToListAsync(cancellationToken);

    /// <summary>Swaps in a rewrapped data key, only if the document still holds the material that was read.</summary>
    public async Task<bool> ReplaceWrappedKeyAsync(KeyDocument read, StoredKeyMaterial rewrapped, CancellationToken cancellationToken)
    {
        var previous = read.Material!;
        var result = await _keys.UpdateOneAsync(
            k => k.AppId == read.AppId && k.Material != null && k.Material.Version == previous.Version
                && k.Material.MasterKeyId == previous.MasterKeyId,
            Builders<KeyDocument>.Update.Set(k => k.Material, rewrapped),
            cancellationToken: cancellationToken);
        return result.ModifiedCount > 0;
    }

    private async Task<bool> UpsertIfNotNewerAsync(
        string appId, long version, bool inclusive, UpdateDefinition<KeyDocument> update, CancellationToken cancellationToken)
    {
        var filter = inclusive
            ? Builders<KeyDocument>.Filter.Where(k => k.AppId == appId && k.Version <= version)
            : Builders<KeyDocument>.Filter.Where(k => k.AppId == appId && k.Version < version);
        try
        {
            await _keys.UpdateOneAsync(filter, update, new UpdateOptions { IsUpsert = true }, cancellationToken);
            return true;
        }
        catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
        {
            // The upsert tried to insert because the filter did not match an existing, newer document.
            return false;
        }
    }
}
