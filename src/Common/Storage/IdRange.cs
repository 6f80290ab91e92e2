using System.Linq.Expressions;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>Filters for string ids built as "part|part|...", which group the documents of one app or user by prefix.</summary>
public static class IdRange
{
    /// <summary>
    /// Matches the ids that start with <paramref name="prefix"/>, as a range from the prefix up to, not including,
    /// the prefix with its last character raised by one. A range can use the id index, where a regular expression
    /// might not.
    /// </summary>
    public static FilterDefinition<T> StartingWith<T>(Expression<Func<T, string>> id, string prefix) =>
        Builders<T>.Filter.Gte(id, prefix) & Builders<T>.Filter.Lt(id, prefix[..^1] + (char)(prefix[^1] + 1));
}
