using AddOnEvents.Common.Storage;
using Microsoft.Extensions.Caching.Memory;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Ingress.Apps;

/// <summary>What the host backend set for one end user; null fields leave the token's value or the default.</summary>
public sealed class UserControls
{
    /// <summary>App id and user pseudonym, so the host's own user id is not stored.</summary>
    [BsonId]
    public string Id { get; set; } = "";

    public bool? AddonDisabled { get; set; }

    public bool? FreeformDisabled { get; set; }

    public long? MonthlyTokenAllowance { get; set; }

    public int? AllowanceThresholdPercent { get; set; }

    public DateTime UpdatedAt { get; set; }
}

public sealed class UserControlStore(IMongoDatabase database, IMemoryCache cache)
{
    // As long as the app's own cache in AppStore, so a change reaches every instance within the same few seconds.
    private static readonly TimeSpan CacheLifetime = TimeSpan.FromSeconds(5);

    private static readonly StoredField<UserControls, string> IdField = new(c => c.Id);

    private readonly IMongoCollection<UserControls> _controls = database.GetCollection<UserControls>("userControls");

    public static string IdOf(string appId, string pseudonym) => appId + "|" + pseudonym;

    public Task<UserControls?> FindAsync(string appId, string pseudonym, CancellationToken cancellationToken)
    {
        string id = IdOf(appId, pseudonym);
        return _controls.Find(Builders<UserControls>.Filter.Eq(IdField, id)).FirstOrDefaultAsync(cancellationToken)!;
    }

    /// <summary>
    /// Returns the user's controls, or null when the host set none, from a cache of a few seconds, so admitting a
    /// prompt costs no database read. Changes made through this instance apply at once.
    /// </summary>
    public async Task<UserControls?> FindCachedAsync(string appId, string pseudonym, CancellationToken cancellationToken)
    {
        string key = CacheKey(IdOf(appId, pseudonym));
        if (cache.TryGetValue(key, out UserControls? cached))
        {
            return cached;
        }

        var controls = await FindAsync(appId, pseudonym, cancellationToken);
        cache.Set(key, controls, CacheLifetime);
        return controls;
    }

    /// <summary>Deletes the controls of every user of an app.</summary>
    public Task DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        _controls.DeleteManyAsync(IdRange.StartingWith<UserControls>(c => c.Id, appId + "|"), cancellationToken);

    public async Task<bool> DeleteAsync(string appId, string pseudonym, CancellationToken cancellationToken)
    {
        string id = IdOf(appId, pseudonym);
        bool deleted = (await _controls.DeleteOneAsync(c => c.Id == id, cancellationToken)).DeletedCount > 0;
        cache.Remove(CacheKey(id));
        return deleted;
    }

    public async Task SaveAsync(UserControls controls, CancellationToken cancellationToken)
    {
        await _controls.ReplaceOneAsync(c => c.Id == controls.Id, controls, new ReplaceOptions { IsUpsert = true }, cancellationToken);
        cache.Remove(CacheKey(controls.Id));
    }

    private static string CacheKey(string id) => "controls:" + id;
}
