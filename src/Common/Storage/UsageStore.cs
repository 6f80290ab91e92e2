using System.Globalization;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>Tokens and requests counted for one app or one end user in one period; updated with atomic increments.</summary>
public sealed class UsageCounter
{
    [BsonId]
    public string Id { get; set; } = "";

    public string AppId { get; set; } = "";

    /// <summary>"day" or "month" for the app, "user-month" for one end user.</summary>
    public string Scope { get; set; } = "";

    public string Period { get; set; } = "";

    public long Tokens { get; set; }

    public long Requests { get; set; }

    public DateTime ExpiresAt { get; set; }
}

/// <summary>Token and request usage per app and day, per app and month, and per end user and month (UTC periods).</summary>
public sealed class UsageStore(IMongoDatabase database)
{
    private readonly IMongoCollection<UsageCounter> _usage = database.GetCollection<UsageCounter>("usage");

    public static string Day(DateTime now) => now.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);

    public static string Month(DateTime now) => now.ToString("yyyy-MM", CultureInfo.InvariantCulture);

    /// <summary>
    /// Adds the upstream's reported usage of one answer to the app's and the user's counters; returns the user's
    /// tokens this month including it, so a caller can tell when a threshold was crossed.
    /// </summary>
    public async Task<long> AddAsync(string appId, string userId, long tokens, DateTime now, CancellationToken cancellationToken)
    {
        var writes = new[]
        {
            Increment(AppDayId(appId, now), appId, "day", Day(now), tokens, now.Date.AddDays(3)),
            Increment(AppMonthId(appId, now), appId, "month", Month(now), tokens, now.Date.AddDays(70)),
        };
        await _usage.BulkWriteAsync(writes, new BulkWriteOptions { IsOrdered = false }, cancellationToken);
        var user = Increment(UserMonthId(appId, userId, now), appId, "user-month", Month(now), tokens, now.Date.AddDays(70));
        var counter = await _usage.FindOneAndUpdateAsync(user.Filter, user.Update,
            new FindOneAndUpdateOptions<UsageCounter> { IsUpsert = true, ReturnDocument = ReturnDocument.After }, cancellationToken);
        return counter.Tokens;
    }

    /// <summary>Returns the app's tokens and requests for today and this month.</summary>
    public async Task<(UsageCounter? Day, UsageCounter? Month)> GetAppUsageAsync(string appId, DateTime now, CancellationToken cancellationToken)
    {
        string dayId = AppDayId(appId, now), monthId = AppMonthId(appId, now);
        var counters = await _usage.Find(u => u.Id == dayId || u.Id == monthId).ToListAsync(cancellationToken);
        return (counters.FirstOrDefault(c => c.Id == dayId), counters.FirstOrDefault(c => c.Id == monthId));
    }

    public Task<UsageCounter?> GetUserMonthAsync(string appId, string userId, DateTime now, CancellationToken cancellationToken)
    {
        string id = UserMonthId(appId, userId, now);
        return _usage.Find(u => u.Id == id).FirstOrDefaultAsync(cancellationToken)!;
    }

    public async Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        (await _usage.DeleteManyAsync(u => u.ExpiresAt < now, cancellationToken)).DeletedCount;

    public Task EnsureIndexesAsync(CancellationToken cancellationToken) => ExpiryIndex.EnsureAsync(_usage, u => u.ExpiresAt, cancellationToken);

    private static string AppDayId(string appId, DateTime now) => $"{appId}|day|{Day(now)}";

    private static string AppMonthId(string appId, DateTime now) => $"{appId}|month|{Month(now)}";

    private static string UserMonthId(string appId, string userId, DateTime now) => $"{appId}|user|{userId}|{Month(now)}";

    private static UpdateOneModel<UsageCounter> Increment(string id, string appId, string scope, string period, long tokens, DateTime expiresAt) =>
        new(Builders<UsageCounter>.Filter.Eq(u => u.Id, id),
            Builders<UsageCounter>.Update
                .Inc(u => u.Tokens, tokens)
                .Inc(u => u.Requests, 1)
                .SetOnInsert(u => u.AppId, appId)
                .SetOnInsert(u => u.Scope, scope)
                .SetOnInsert(u => u.Period, period)
                .SetOnInsert(u => u.ExpiresAt, expiresAt))
        { IsUpsert = true };
}

/// <summary>Fixed-window request counters shared by every Ingress instance.</summary>
public sealed class RateCounterStore(IMongoDatabase database)
{
    private readonly IMongoCollection<UsageCounter> _counters = database.GetCollection<UsageCounter>("rateCounters");

    /// <summary>Counts one request in the current minute of <paramref name="scope"/> and returns the count including it.</summary>
    public async Task<long> HitAsync(string scope, DateTime now, CancellationToken cancellationToken)
    {
        string window = now.ToString("yyyyMMddHHmm", CultureInfo.InvariantCulture);
        var counter = await _counters.FindOneAndUpdateAsync<UsageCounter>(
            c => c.Id == scope + "|" + window,
            Builders<UsageCounter>.Update
                .Inc(c => c.Requests, 1)
                .SetOnInsert(c => c.Scope, scope)
                .SetOnInsert(c => c.Period, window)
                .SetOnInsert(c => c.ExpiresAt, now.AddMinutes(2)),
            new FindOneAndUpdateOptions<UsageCounter> { IsUpsert = true, ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return counter.Requests;
    }

    public async Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        (await _counters.DeleteManyAsync(u => u.ExpiresAt < now, cancellationToken)).DeletedCount;

    public Task EnsureIndexesAsync(CancellationToken cancellationToken) => ExpiryIndex.EnsureAsync(_counters, u => u.ExpiresAt, cancellationToken);
}

internal static class ExpiryIndex
{
    /// <summary>
    /// Creates a TTL index on the expiry field, so MongoDB removes expired documents by itself. NOTE: jongodb accepts
    /// TTL indexes but never expires documents, so every short-lived store also has an explicit cleanup path.
    /// </summary>
    public static Task EnsureAsync<T>(IMongoCollection<T> collection, System.Linq.Expressions.Expression<Func<T, object>> field,
        CancellationToken cancellationToken) =>
        collection.Indexes.CreateOneAsync(
            new CreateIndexModel<T>(Builders<T>.IndexKeys.Ascending(field), new CreateIndexOptions { ExpireAfter = TimeSpan.Zero }),
            cancellationToken: cancellationToken);
}
