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

    /// <summary>
    /// Tokens reserved for prompts that were admitted against this counter's limit and have not finished yet. Only
    /// counters that a quota or an allowance checks have it.
    /// </summary>
    public long Reserved { get; set; }

    public DateTime ExpiresAt { get; set; }

    /// <summary>Fields of the counters that every prompt writes, each rendered once.</summary>
    internal static class Fields
    {
        public static readonly StoredField<UsageCounter, string> Id = new(u => u.Id);
        public static readonly StoredField<UsageCounter, string> AppId = new(u => u.AppId);
        public static readonly StoredField<UsageCounter, string> Scope = new(u => u.Scope);
        public static readonly StoredField<UsageCounter, string> Period = new(u => u.Period);
        public static readonly StoredField<UsageCounter, long> Tokens = new(u => u.Tokens);
        public static readonly StoredField<UsageCounter, long> Requests = new(u => u.Requests);
        public static readonly StoredField<UsageCounter, long> Reserved = new(u => u.Reserved);
        public static readonly StoredField<UsageCounter, DateTime> ExpiresAt = new(u => u.ExpiresAt);
    }
}

/// <summary>Token and request usage per app and day, per app and month, and per end user and month (UTC periods).</summary>
public sealed class UsageStore
{
    public const string CollectionName = "usage";

    private readonly CollectionParts<UsageCounter> _usage;
    private readonly IncrementBatch _batch;

    public UsageStore(IMongoDatabase database)
    {
        _usage = new CollectionParts<UsageCounter>(database, CollectionName);
        _batch = new IncrementBatch(_usage);
    }

    public static string Day(DateTime now) => now.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);

    public static string Month(DateTime now) => now.ToString("yyyy-MM", CultureInfo.InvariantCulture);

    /// <summary>
    /// Adds the upstream's reported usage of one completion to the app's and the user's counters, and returns once
    /// the database acknowledged the write: true when the write created one of the counters. Concurrent calls share
    /// one bulk write.
    /// </summary>
    public Task<bool> AddAsync(string appId, string userId, long tokens, DateTime now, CancellationToken cancellationToken) =>
        _batch.WriteAsync([AppDay(appId, tokens, now), AppMonth(appId, tokens, now), UserMonth(appId, userId, tokens, now)], cancellationToken);

    /// <summary>
    /// Adds usage to the app's counters only, for a completion whose user was erased while it ran: the app's bill
    /// still includes it, but no counter of the user may come back. Returns what <see cref="AddAsync"/> returns.
    /// </summary>
    public Task<bool> AddAppAsync(string appId, long tokens, DateTime now, CancellationToken cancellationToken) =>
        _batch.WriteAsync([AppDay(appId, tokens, now), AppMonth(appId, tokens, now)], cancellationToken);

    /// <summary>
    /// Adds usage as <see cref="AddAsync"/> does, and returns the user's tokens this month including it, so a
    /// caller can tell when a threshold was crossed. The user's counter is written on its own to read it back.
    /// NOTE: jongodb can return a total that already includes a concurrent increment of the same counter while
    /// other writes to the collection run (measured: 2 equal totals out of 50 concurrent calls). The stored counts
    /// stay right, but a threshold may then be reported twice or not at all. MongoDB returns the document exactly
    /// as this update left it.
    /// </summary>
    public async Task<long> AddAndReadUserAsync(string appId, string userId, long tokens, DateTime now, CancellationToken cancellationToken)
    {
        var appCounters = _batch.WriteAsync([AppDay(appId, tokens, now), AppMonth(appId, tokens, now)], cancellationToken);
        var user = IncrementBatch.Model(UserMonth(appId, userId, tokens, now));
        var counter = await _usage.For(user.Id).FindOneAndUpdateAsync(user.Model.Filter, user.Model.Update,
            new FindOneAndUpdateOptions<UsageCounter> { IsUpsert = true, ReturnDocument = ReturnDocument.After }, cancellationToken);
        await appCounters;
        return counter.Tokens;
    }

    /// <summary>Returns the app's tokens and requests for today and this month.</summary>
    public async Task<(UsageCounter? Day, UsageCounter? Month)> GetAppUsageAsync(string appId, DateTime now, CancellationToken cancellationToken)
    {
        var day = FindAsync(AppDayId(appId, now), cancellationToken);
        var month = FindAsync(AppMonthId(appId, now), cancellationToken);
        return (await day, await month);
    }

    public Task<UsageCounter?> GetUserMonthAsync(string appId, string userId, DateTime now, CancellationToken cancellationToken) =>
        FindAsync(UserMonthId(appId, userId, now), cancellationToken);

    public Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        _usage.DeleteManyAsync(Builders<UsageCounter>.Filter.Where(u => u.ExpiresAt < now), cancellationToken);

    /// <summary>Returns the app's counter for today, to reserve tokens against a daily limit.</summary>
    public static QuotaCounter AppDayLimit(string appId, DateTime now, long limit, long used) => new(AppDay(appId, 0, now), limit, used);

    /// <summary>Returns the app's counter for this month, to reserve tokens against a monthly limit.</summary>
    public static QuotaCounter AppMonthLimit(string appId, DateTime now, long limit, long used) => new(AppMonth(appId, 0, now), limit, used);

    /// <summary>Returns the user's counter for this month, to reserve tokens against the user's allowance.</summary>
    public static QuotaCounter UserMonthLimit(string appId, string userId, DateTime now, long limit, long used) =>
        new(UserMonth(appId, userId, 0, now), limit, used);

    /// <summary>
    /// Adds <paramref name="tokens"/> to the counter's reserved tokens if its used and reserved tokens together are
    /// still below its limit, and returns whether it did. Concurrent calls cannot all take the same room, because
    /// each condition includes the tokens the others reserved. The used tokens are those the caller read just before,
    /// so answers counted since then can let one more prompt in.
    /// </summary>
    public async Task<bool> TryReserveAsync(QuotaCounter counter, long tokens, CancellationToken cancellationToken)
    {
        var filter = Builders<UsageCounter>.Filter;
        var room = filter.Eq(UsageCounter.Fields.Id, counter.Counter.Id)
            & (filter.Lt(UsageCounter.Fields.Reserved, counter.Limit - counter.Used) | filter.Exists(UsageCounter.Fields.Reserved, exists: false));
        var update = Builders<UsageCounter>.Update
            .Inc(UsageCounter.Fields.Reserved, tokens)
            .SetOnInsert(UsageCounter.Fields.AppId, counter.Counter.AppId)
            .SetOnInsert(UsageCounter.Fields.Scope, counter.Counter.Scope)
            .SetOnInsert(UsageCounter.Fields.Period, counter.Counter.Period)
            .SetOnInsert(UsageCounter.Fields.ExpiresAt, counter.Counter.ExpiresAt);

        // The upsert creates a counter that does not exist yet. On one that exists but has no room it tries to
        // insert a second document with the same id, and the duplicate key means "no room". Two first prompts
        // racing to create the counter also meet a duplicate key, so one more attempt distinguishes the two cases.
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                await _usage.For(counter.Counter.Id).UpdateOneAsync(room, update, new UpdateOptions { IsUpsert = true }, cancellationToken);
                return true;
            }
            catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex) && attempt == 0)
            {
            }
            catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
            {
                return false;
            }
        }
    }

    /// <summary>Releases tokens reserved on the counters. A counter deleted since then stays deleted.</summary>
    public Task ReleaseReservedAsync(IEnumerable<string> counterIds, long tokens, CancellationToken cancellationToken) =>
        _usage.BulkWriteAsync(
            counterIds.Select(id => (id, (WriteModel<UsageCounter>)new UpdateOneModel<UsageCounter>(
                Builders<UsageCounter>.Filter.Eq(UsageCounter.Fields.Id, id), Builders<UsageCounter>.Update.Inc(UsageCounter.Fields.Reserved, -tokens)))),
            cancellationToken);

    public Task DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        _usage.DeleteManyAsync(Builders<UsageCounter>.Filter.Where(u => u.AppId == appId), cancellationToken);

    /// <summary>Returns every monthly counter still kept for one end user of an app, oldest first.</summary>
    public async Task<List<UsageCounter>> GetUserMonthsAsync(string appId, string userId, CancellationToken cancellationToken) =>
        [.. (await _usage.FindAsync(UserCounters(appId, userId), cancellationToken)).OrderBy(u => u.Period, StringComparer.Ordinal)];

    public Task<long> DeleteUserAsync(string appId, string userId, CancellationToken cancellationToken) =>
        _usage.DeleteManyAsync(UserCounters(appId, userId), cancellationToken);

    public Task EnsureIndexesAsync(CancellationToken cancellationToken) =>
        _usage.EnsureExpiryIndexAsync(u => u.ExpiresAt, cancellationToken);

    /// <summary>
    /// Moves counters that builds with a single collection left in the first part to the part their id hashes to,
    /// and returns how many it moved. A counter that a newer build has started meanwhile gets the old counts added.
    /// </summary>
    public Task<long> MoveMisplacedAsync(CancellationToken cancellationToken) =>
        _usage.MoveMisplacedAsync(u => u.Id, old => Builders<UsageCounter>.Update
            .Inc(u => u.Tokens, old.Tokens)
            .Inc(u => u.Requests, old.Requests)
            .Inc(u => u.Reserved, old.Reserved), cancellationToken);

    private Task<UsageCounter?> FindAsync(string id, CancellationToken cancellationToken) =>
        _usage.For(id).Find(Builders<UsageCounter>.Filter.Eq(UsageCounter.Fields.Id, id)).FirstOrDefaultAsync(cancellationToken)!;

    private static string AppDayId(string appId, DateTime now) => $"{appId}|day|{Day(now)}";

    private static string AppMonthId(string appId, DateTime now) => $"{appId}|month|{Month(now)}";

    private static string UserMonthId(string appId, string userId, DateTime now) => UserPrefix(appId, userId) + Month(now);

    /// <summary>Returns the start shared by the ids of every monthly counter of one user.</summary>
    private static string UserPrefix(string appId, string userId) => $"{appId}|user|{userId}|";

    private static FilterDefinition<UsageCounter> UserCounters(string appId, string userId) =>
        IdRange.StartingWith<UsageCounter>(u => u.Id, UserPrefix(appId, userId));

    private static CounterIncrement AppDay(string appId, long tokens, DateTime now) =>
        new(AppDayId(appId, now), appId, "day", Day(now), tokens, 1, now.Date.AddDays(3));

    private static CounterIncrement AppMonth(string appId, long tokens, DateTime now) =>
        new(AppMonthId(appId, now), appId, "month", Month(now), tokens, 1, now.Date.AddDays(70));

    private static CounterIncrement UserMonth(string appId, string userId, long tokens, DateTime now) =>
        new(UserMonthId(appId, userId, now), appId, "user-month", Month(now), tokens, 1, now.Date.AddDays(70));
}

/// <summary>A counter with a token limit, and the tokens it had used when the caller read it.</summary>
public sealed record QuotaCounter(CounterIncrement Counter, long Limit, long Used);

/// <summary>An addition to one usage counter, created with its fixed fields when it does not exist yet.</summary>
public sealed record CounterIncrement(string Id, string AppId, string Scope, string Period, long Tokens, long Requests, DateTime ExpiresAt);

/// <summary>
/// Group commit for counter increments: callers that arrive while a write is running are queued, and the next
/// write carries all of them at once, with the increments to the same counter summed. Each database write costs
/// a round trip, and on jongodb time that grows with the collection, so under load this turns three writes per
/// completion into a few per batch. With no other write running, a call is written at once.
/// </summary>
internal sealed class IncrementBatch(CollectionParts<UsageCounter> collection)
{
    private readonly Lock _gate = new();
    private List<(CounterIncrement[] Increments, TaskCompletionSource<bool> Written)> _queued = [];
    private bool _writing;

    /// <summary>
    /// Queues the increments and completes once a write that includes them is acknowledged, with true when that
    /// write created one of their counters, or fails with the write's error.
    /// </summary>
    public Task<bool> WriteAsync(CounterIncrement[] increments, CancellationToken cancellationToken)
    {
        var written = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool start;
        lock (_gate)
        {
            _queued.Add((increments, written));
            start = !_writing;
            _writing = true;
        }

        if (start)
        {
            _ = Task.Run(DrainAsync, CancellationToken.None);
        }

        // A cancelled caller stops waiting, but its increments stay queued: the completion they count was delivered.
        return written.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Returns the upsert of one increment, with the id of the counter it writes.</summary>
    public static (string Id, UpdateOneModel<UsageCounter> Model) Model(CounterIncrement increment) =>
        (increment.Id, new(Builders<UsageCounter>.Filter.Eq(UsageCounter.Fields.Id, increment.Id),
            Builders<UsageCounter>.Update
                .Inc(UsageCounter.Fields.Tokens, increment.Tokens)
                .Inc(UsageCounter.Fields.Requests, increment.Requests)
                .SetOnInsert(UsageCounter.Fields.AppId, increment.AppId)
                .SetOnInsert(UsageCounter.Fields.Scope, increment.Scope)
                .SetOnInsert(UsageCounter.Fields.Period, increment.Period)
                .SetOnInsert(UsageCounter.Fields.ExpiresAt, increment.ExpiresAt))
        { IsUpsert = true });

    private async Task DrainAsync()
    {
        while (true)
        {
            List<(CounterIncrement[] Increments, TaskCompletionSource<bool> Written)> batch;
            lock (_gate)
            {
                if (_queued.Count == 0)
                {
                    _writing = false;
                    return;
                }

                batch = _queued;
                _queued = [];
            }

            var models = batch
                .SelectMany(entry => entry.Increments)
                .GroupBy(increment => increment.Id)
                .Select(counter => Model(counter.First() with
                {
                    Tokens = counter.Sum(increment => increment.Tokens),
                    Requests = counter.Sum(increment => increment.Requests),
                }))
                .Select(model => (model.Id, (WriteModel<UsageCounter>)model.Model))
                .ToList();
            try
            {
                var created = await collection.BulkWriteAsync(models, CancellationToken.None);
                batch.ForEach(entry => entry.Written.TrySetResult(entry.Increments.Any(increment => created.Contains(increment.Id))));
            }
            catch (Exception ex)
            {
                batch.ForEach(entry => entry.Written.TrySetException(ex));
            }
        }
    }
}

/// <summary>Fixed-window request counters shared by every Ingress instance.</summary>
public sealed class RateCounterStore(IMongoDatabase database)
{
    public const string CollectionName = "rateCounters";

    private readonly CollectionParts<UsageCounter> _counters = new(database, CollectionName);

    /// <summary>Counts one request in the current minute of <paramref name="scope"/> and returns the count including it.</summary>
    public async Task<long> HitAsync(string scope, DateTime now, CancellationToken cancellationToken)
    {
        string window = now.ToString("yyyyMMddHHmm", CultureInfo.InvariantCulture);
        string id = scope + "|" + window;
        var counter = await _counters.For(id).FindOneAndUpdateAsync(
            Builders<UsageCounter>.Filter.Eq(UsageCounter.Fields.Id, id),
            Builders<UsageCounter>.Update
                .Inc(UsageCounter.Fields.Requests, 1)
                .SetOnInsert(UsageCounter.Fields.Scope, scope)
                .SetOnInsert(UsageCounter.Fields.Period, window)
                .SetOnInsert(UsageCounter.Fields.ExpiresAt, now.AddMinutes(2)),
            new FindOneAndUpdateOptions<UsageCounter> { IsUpsert = true, ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return counter.Requests;
    }

    public Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        _counters.DeleteManyAsync(Builders<UsageCounter>.Filter.Where(u => u.ExpiresAt < now), cancellationToken);

    /// <summary>Returns the per-minute counters still kept for one end user of an app, oldest first.</summary>
    public async Task<List<UsageCounter>> GetUserAsync(string appId, string pseudonym, CancellationToken cancellationToken) =>
        [.. (await _counters.FindAsync(UserCounters(appId, pseudonym), cancellationToken)).OrderBy(c => c.Period, StringComparer.Ordinal)];

    public Task<long> DeleteUserAsync(string appId, string pseudonym, CancellationToken cancellationToken) =>
        _counters.DeleteManyAsync(UserCounters(appId, pseudonym), cancellationToken);

    /// <summary>Deletes the app's own counters and those of each of its users.</summary>
    public Task<long> DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        _counters.DeleteManyAsync(
            IdRange.StartingWith<UsageCounter>(c => c.Id, AppScope(appId) + "|") | IdRange.StartingWith<UsageCounter>(c => c.Id, UserScopePrefix(appId)),
            cancellationToken);

    /// <summary>Returns the scope under which all requests of an app are counted.</summary>
    public static string AppScope(string appId) => "app|" + appId;

    public Task EnsureIndexesAsync(CancellationToken cancellationToken) =>
        _counters.EnsureExpiryIndexAsync(u => u.ExpiresAt, cancellationToken);

    /// <summary>
    /// Moves counters that builds with a single collection left in the first part to the part their id hashes to,
    /// and returns how many it moved. Where a newer build has started the same minute's counter, that one is kept.
    /// </summary>
    public Task<long> MoveMisplacedAsync(CancellationToken cancellationToken) =>
        _counters.MoveMisplacedAsync(c => c.Id, _ => null, cancellationToken);

    /// <summary>Returns the scope under which one end user's requests are counted.</summary>
    public static string UserScope(string appId, string pseudonym) => UserScopePrefix(appId) + pseudonym;

    /// <summary>Returns the start shared by the scopes of every end user of an app.</summary>
    private static string UserScopePrefix(string appId) => $"user|{appId}|";

    private static FilterDefinition<UsageCounter> UserCounters(string appId, string pseudonym) =>
        IdRange.StartingWith<UsageCounter>(c => c.Id, UserScope(appId, pseudonym) + "|");
}

public static class ExpiryIndex
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
