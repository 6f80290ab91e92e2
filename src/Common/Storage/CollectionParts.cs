using MongoDB.Bson;
using MongoDB.Bson.Serialization;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>
/// A collection stored as <see cref="CollectionParts.Count"/> collections, each document in the part that a hash of
/// its id picks. Operations by id touch one part, and queries by other fields run on every part.
/// NOTE: jongodb checks a unique index, and every collection has one on _id, by comparing each document with every
/// document before it. A write therefore costs time that grows with the square of the collection's size: 16.8 ms per
/// insert into 1,000 documents and 394 ms into 5,000 on a 2-core machine. Splitting the collections written for every
/// prompt keeps each part small. MongoDB checks the index in a B-tree, so there the split only costs one query per
/// part for the rare scans by other fields: export, erasure, app removal and clean-up.
/// </summary>
public sealed class CollectionParts<T>
{
    private readonly IMongoCollection<T>[] _parts;

    public CollectionParts(IMongoDatabase database, string name)
    {
        _parts = [.. CollectionParts.NamesOf(name).Select(part => database.GetCollection<T>(part))];
    }

    public IMongoCollection<T> For(string id) => _parts[CollectionParts.PartOf(id)];

    public IMongoCollection<T> For(Guid id) => For(id.ToString("N"));

    /// <summary>
    /// Returns the documents of every part that match, in no particular order. The parts are read one after another,
    /// because these scans are rare and all parts at once per caller would crowd the connection pool's wait queue.
    /// </summary>
    public async Task<List<T>> FindAsync(FilterDefinition<T> filter, CancellationToken cancellationToken)
    {
        var found = new List<T>();
        foreach (var part in _parts)
        {
            found.AddRange(await part.Find(filter).ToListAsync(cancellationToken));
        }

        return found;
    }

    /// <summary>Deletes the matching documents of every part, one part after another, and returns how many there were.</summary>
    public async Task<long> DeleteManyAsync(FilterDefinition<T> filter, CancellationToken cancellationToken)
    {
        long deleted = 0;
        foreach (var part in _parts)
        {
            deleted += (await part.DeleteManyAsync(filter, cancellationToken)).DeletedCount;
        }

        return deleted;
    }

    /// <summary>
    /// Writes the models of each part in one bulk write per part, all parts at once, and returns the ids of the
    /// documents that upserts created.
    /// </summary>
    public async Task<HashSet<string>> BulkWriteAsync(IEnumerable<(string Id, WriteModel<T> Model)> models, CancellationToken cancellationToken)
    {
        var parts = models.GroupBy(entry => CollectionParts.PartOf(entry.Id)).Select(part => (Index: part.Key, Entries: part.ToList())).ToList();
        var results = await Task.WhenAll(parts.Select(part => _parts[part.Index].BulkWriteAsync(
            part.Entries.Select(entry => entry.Model), new BulkWriteOptions { IsOrdered = false }, cancellationToken)));
        var created = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < parts.Count; i++)
        {
            created.UnionWith(results[i].Upserts.Select(upsert => parts[i].Entries[upsert.Index].Id));
        }

        return created;
    }

    /// <summary>
    /// Moves the documents that earlier layouts left in a part other than the one their id hashes to now, and returns
    /// how many it moved. Builds that kept the whole collection under its own name left them in the first part, and
    /// builds with <see cref="CollectionParts.EarlierCount"/> parts in the first parts of that number. When the right
    /// part already has a document with that id, <paramref name="mergeUpdate"/> returns the update that adds the old
    /// document to it, or null to keep the newer document and drop the old one. Safe to run again and from several
    /// processes at once.
    /// </summary>
    public async Task<long> MoveMisplacedAsync(Func<T, string> idOf, Func<T, UpdateDefinition<T>?> mergeUpdate,
        CancellationToken cancellationToken)
    {
        long moved = 0;
        for (int index = 0; index < CollectionParts.EarlierCount; index++)
        {
            var source = AsBsonDocuments(_parts[index]);
            using var cursor = await source.FindAsync(FilterDefinition<BsonDocument>.Empty, cancellationToken: cancellationToken);
            while (await cursor.MoveNextAsync(cancellationToken))
            {
                foreach (var document in cursor.Current)
                {
                    int part = CollectionParts.PartOf(idOf(BsonSerializer.Deserialize<T>(document)));
                    if (part != index && await MoveAsync(document, source, _parts[part], mergeUpdate, cancellationToken))
                    {
                        moved++;
                    }
                }
            }
        }

        return moved;
    }

    /// <summary>Creates the TTL index of <see cref="ExpiryIndex"/> on the expiry field of every part.</summary>
    public Task EnsureExpiryIndexAsync(System.Linq.Expressions.Expression<Func<T, object>> field, CancellationToken cancellationToken) =>
        Task.WhenAll(_parts.Select(part => ExpiryIndex.EnsureAsync(part, field, cancellationToken)));

    /// <summary>Moves one document out of the part it was read from and returns whether this call moved it.</summary>
    /// <remarks>
    /// The delete from that part comes first and matches every field of the document as it was read, so of
    /// several processes moving at once exactly one deletes it, and only that one writes it to its part. Writing
    /// first would let a second process meet the copy as a duplicate key and add a counter twice. A document that
    /// changed since it was read, such as a counter that a build still running the old layout added to, is read again.
    /// NOTE: a process that stops, or a write that fails, after the delete loses that one document. That is the price
    /// of never adding a counter twice without a transaction across two collections.
    /// </remarks>
    private static async Task<bool> MoveAsync(BsonDocument document, IMongoCollection<BsonDocument> source, IMongoCollection<T> target,
        Func<T, UpdateDefinition<T>?> mergeUpdate, CancellationToken cancellationToken)
    {
        var id = Builders<BsonDocument>.Filter.Eq("_id", document["_id"]);
        var read = document;
        while (true)
        {
            var deleted = await source.DeleteOneAsync(new BsonDocumentFilterDefinition<BsonDocument>(read), cancellationToken);
            if (deleted.DeletedCount == 1)
            {
                break;
            }

            read = await source.Find(id).FirstOrDefaultAsync(cancellationToken);
            if (read is null)
            {
                // Another process moved or deleted it.
                return false;
            }
        }

        var merge = mergeUpdate(BsonSerializer.Deserialize<T>(read));
        var targetId = Builders<T>.Filter.Eq("_id", read["_id"]);
        while (true)
        {
            try
            {
                await AsBsonDocuments(target).InsertOneAsync(read, cancellationToken: cancellationToken);
                return true;
            }
            catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
            {
            }

            if (merge is null)
            {
                return true;
            }

            // The newer document can expire between the insert and the update, and then the insert is tried again.
            var merged = await target.UpdateOneAsync(targetId, merge, cancellationToken: cancellationToken);
            if (merged.MatchedCount == 1)
            {
                return true;
            }
        }
    }

    private static IMongoCollection<BsonDocument> AsBsonDocuments(IMongoCollection<T> part) =>
        part.Database.GetCollection<BsonDocument>(part.CollectionNamespace.CollectionName, part.Settings);
}

/// <summary>How documents are spread over the parts of a <see cref="CollectionParts{T}"/>.</summary>
public static class CollectionParts
{
    /// <summary>
    /// The number of parts. Documents are found in the part their id hashes to, so a change hides the documents
    /// already stored until PromptWorker's start moves them, which is why it is a constant and not a setting.
    /// </summary>
    public const int Count = 64;

    /// <summary>
    /// The number of parts of the previous layout. <see cref="Count"/> is a multiple of it, so a document that layout
    /// kept in part p belongs to a part whose number modulo this one is p, and only the first parts need a move.
    /// </summary>
    public const int EarlierCount = 16;

    /// <summary>Returns the names of the parts of a collection: the first keeps the collection's own name.</summary>
    public static IEnumerable<string> NamesOf(string name) =>
        Enumerable.Range(0, Count).Select(part => part == 0 ? name : $"{name}_{part}");

    /// <summary>
    /// Returns the part of an id from its 32-bit FNV-1a hash, which, unlike <see cref="string.GetHashCode()"/>, is
    /// the same in every process.
    /// </summary>
    public static int PartOf(string id)
    {
        uint hash = 2166136261;
        foreach (char c in id)
        {
            hash = (hash ^ c) * 16777619;
        }

        return (int)(hash % Count);
    }
}
