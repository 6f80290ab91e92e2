using System.Diagnostics;
using HdrHistogram;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Bench;

public sealed record DatabaseFigures(Percentiles SequentialRead, double ParallelReadsPerSecond, int ParallelReaders,
    IReadOnlyDictionary<string, long> Counts, IReadOnlyList<WriteFigures> Writes);

/// <summary>
/// Single-document writes into a scratch collection of <paramref name="Documents"/> documents, in milliseconds, and
/// inserts into an empty collection of the same database at that moment.
/// </summary>
public sealed record WriteFigures(long Documents, Percentiles Insert, Percentiles Update, Percentiles ReadById, double FillPerSecond,
    Percentiles EmptySiblingInsert);

/// <summary>
/// Times the one database step on every prompt's path, PromptWorker's read of the app's key document, straight
/// against jongodb with the same driver, so its cost can be shown apart from the pipeline's.
/// </summary>
public static class DatabaseProbe
{
    public static async Task<DatabaseFigures> MeasureAsync(string uri, string database, string appId, IReadOnlyList<string> collections,
        CancellationToken cancellationToken)
    {
        var client = new MongoClient(uri);
        var db = client.GetDatabase(database);
        var keys = db.GetCollection<BsonDocument>("keys");
        var filter = Builders<BsonDocument>.Filter.Eq("_id", appId);

        // Warm the connection pool and the server before timing.
        for (int i = 0; i < 50; i++)
        {
            _ = await keys.Find(filter).FirstOrDefaultAsync(cancellationToken);
        }

        var histogram = new LongHistogram(1, 60_000_000, 3);
        for (int i = 0; i < 500; i++)
        {
            long start = Stopwatch.GetTimestamp();
            var document = await keys.Find(filter).FirstOrDefaultAsync(cancellationToken);
            histogram.RecordValue(Math.Max(1, Stopwatch.GetElapsedTime(start).Ticks / TimeSpan.TicksPerMicrosecond));
            if (document is null)
            {
                throw new InvalidOperationException($"No key document for app {appId} in {database}.keys.");
            }
        }

        const int readers = 32;
        long reads = 0;
        var window = TimeSpan.FromSeconds(3);
        var watch = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, readers).Select(async reader =>
        {
            while (watch.Elapsed < window)
            {
                await keys.Find(filter).FirstOrDefaultAsync(cancellationToken);
                Interlocked.Increment(ref reads);
            }
        }));
        double perSecond = reads / watch.Elapsed.TotalSeconds;

        var counts = await CountAsync(db, collections, cancellationToken);
        return new DatabaseFigures(Percentiles.Of(histogram), perSecond, readers, counts, await MeasureWritesAsync(db, WriteSizes, cancellationToken));
    }

    /// <summary>Collection sizes at which single-document writes are timed.</summary>
    public static readonly long[] WriteSizes = [0, 1000, 2500, 5000];

    /// <summary>
    /// Times an insert, an update by id and a read by id, shaped like PromptWorker's per-prompt result record, in a
    /// fresh scratch collection filled (by batched inserts) to each size in turn.
    /// </summary>
    public static async Task<IReadOnlyList<WriteFigures>> MeasureWritesAsync(IMongoDatabase db, IReadOnlyList<long> sizes,
        CancellationToken cancellationToken)
    {
        var scratch = db.GetCollection<BsonDocument>("benchScratch" + Guid.NewGuid().ToString("N")[..8]);
        var figures = new List<WriteFigures>();
        long documents = 0;
        foreach (long size in sizes)
        {
            var fill = Stopwatch.StartNew();
            long filled = 0;
            while (documents < size)
            {
                int batch = (int)Math.Min(500, size - documents);
                await scratch.InsertManyAsync(Enumerable.Range(0, batch).Select(_ => Record()), cancellationToken: cancellationToken);
                documents += batch;
                filled += batch;
            }

            double fillRate = filled == 0 ? double.NaN : filled / fill.Elapsed.TotalSeconds;
            var insert = new LongHistogram(1, 60_000_000, 3);
            var update = new LongHistogram(1, 60_000_000, 3);
            var read = new LongHistogram(1, 60_000_000, 3);
            var siblingInsert = new LongHistogram(1, 60_000_000, 3);

            // Inserts into an empty collection beside the full one show whether a write's cost follows the size of its
            // own collection or of the whole database.
            var sibling = db.GetCollection<BsonDocument>("benchScratch" + Guid.NewGuid().ToString("N")[..8]);
            for (int i = 0; i < 30; i++)
            {
                var record = Record();
                var id = record["_id"];
                long start = Stopwatch.GetTimestamp();
                await scratch.InsertOneAsync(record, cancellationToken: cancellationToken);
                insert.RecordValue(Micros(start));
                start = Stopwatch.GetTimestamp();
                await scratch.UpdateOneAsync(Builders<BsonDocument>.Filter.Eq("_id", id),
                    Builders<BsonDocument>.Update.Set("Status", "completed").Set("Text", "Echo: a short answer").Set("Published", true),
                    cancellationToken: cancellationToken);
                update.RecordValue(Micros(start));
                start = Stopwatch.GetTimestamp();
                await scratch.Find(Builders<BsonDocument>.Filter.Eq("_id", id)).FirstOrDefaultAsync(cancellationToken);
                read.RecordValue(Micros(start));
                documents++;
                start = Stopwatch.GetTimestamp();
                await sibling.InsertOneAsync(Record(), cancellationToken: cancellationToken);
                siblingInsert.RecordValue(Micros(start));
            }

            figures.Add(new WriteFigures(size, Percentiles.Of(insert), Percentiles.Of(update), Percentiles.Of(read), fillRate,
                Percentiles.Of(siblingInsert)));
        }

        return figures;

        static long Micros(long start) => Math.Max(1, Stopwatch.GetElapsedTime(start).Ticks / TimeSpan.TicksPerMicrosecond);
    }

    private static BsonDocument Record() => new()
    {
        ["_id"] = new BsonBinaryData(Guid.NewGuid(), GuidRepresentation.Standard),
        ["AppId"] = "app_benchmark0000",
        ["UserId"] = "u_0123456789abcdefghijklmn",
        ["Status"] = "pending",
        ["Text"] = BsonNull.Value,
        ["LeaseOwner"] = "worker-0123456789",
        ["LeaseUntil"] = DateTime.UtcNow.AddSeconds(20),
        ["Attempts"] = 0,
        ["Published"] = false,
        ["CreatedAt"] = DateTime.UtcNow,
        ["ExpiresAt"] = DateTime.UtcNow.AddMinutes(10),
    };

    public static async Task<IReadOnlyDictionary<string, long>> CountAsync(string uri, string database, IReadOnlyList<string> collections,
        CancellationToken cancellationToken) =>
        await CountAsync(new MongoClient(uri).GetDatabase(database), collections, cancellationToken);

    private static async Task<IReadOnlyDictionary<string, long>> CountAsync(IMongoDatabase db, IReadOnlyList<string> collections,
        CancellationToken cancellationToken)
    {
        var counts = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (string name in collections)
        {
            try
            {
                // The services store their busiest collections in 16 parts, NAME and NAME_1 to NAME_15, which count as one.
                long total = 0;
                foreach (string part in Enumerable.Range(0, 16).Select(i => i == 0 ? name : $"{name}_{i}"))
                {
                    total += await db.GetCollection<BsonDocument>(part).EstimatedDocumentCountAsync(cancellationToken: cancellationToken);
                }

                counts[name] = total;
            }
            catch (MongoException)
            {
                counts[name] = -1;
            }
        }

        return counts;
    }
}
