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

    /// <summary>Returns the documents of every part that match, in no particular order.</summary>
    public async Task<List<T>> FindAsync(FilterDefinition<T> filter, CancellationToken cancellationToken)
    {
        var found = await Task.WhenAll(_parts.Select(part => part.Find(filter).ToListAsync(cancellationToken)));
        return [.. found.SelectMany(documents => documents)];
    }

    /// <summary>Deletes the matching documents of every part and returns how many there were.</summary>
    public async Task<long> DeleteManyAsync(FilterDefinition<T> filter, CancellationToken cancellationToken)
    {
        var deleted = await Task.WhenAll(_parts.Select(part => part.DeleteManyAsync(filter, cancellationToken)));
        return deleted.Sum(result => result.DeletedCount);
    }

    /// <summary>Writes the models of each part in one bulk write per part, all parts at once.</summary>
    public Task BulkWriteAsync(IEnumerable<(string Id, WriteModel<T> Model)> models, CancellationToken cancellationToken) =>
        Task.WhenAll(models
            .GroupBy(entry => CollectionParts.PartOf(entry.Id))
            .Select(part => _parts[part.Key].BulkWriteAsync(
                part.Select(entry => entry.Model), new BulkWriteOptions { IsOrdered = false }, cancellationToken)));

    /// <summary>Runs the same set-up, such as creating an index, on every part.</summary>
    public Task ForEachAsync(Func<IMongoCollection<T>, Task> action) => Task.WhenAll(_parts.Select(action));
}

/// <summary>How documents are spread over the parts of a <see cref="CollectionParts{T}"/>.</summary>
public static class CollectionParts
{
    /// <summary>
    /// The number of parts. Documents are found in the part their id hashes to, so changing it hides the documents
    /// already stored, which is why it is a constant and not a setting.
    /// </summary>
    public const int Count = 16;

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
