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

public sealed class UserControlStore(IMongoDatabase database)
{
    private readonly IMongoCollection<UserControls> _controls = database.GetCollection<UserControls>("userControls");

    public static string IdOf(string appId, string pseudonym) => appId + "|" + pseudonym;

    public Task<UserControls?> FindAsync(string appId, string pseudonym, CancellationToken cancellationToken)
    {
        string id = IdOf(appId, pseudonym);
        return _controls.Find(c => c.Id == id).FirstOrDefaultAsync(cancellationToken)!;
    }

    /// <summary>Deletes the controls of every user of an app: the ids from "appId|" up to, not including, "appId}".</summary>
    public Task DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        _controls.DeleteManyAsync(
            Builders<UserControls>.Filter.Gte(c => c.Id, appId + "|") & Builders<UserControls>.Filter.Lt(c => c.Id, appId + "}"),
            cancellationToken);

    public async Task<bool> DeleteAsync(string appId, string pseudonym, CancellationToken cancellationToken)
    {
        string id = IdOf(appId, pseudonym);
        return (await _controls.DeleteOneAsync(c => c.Id == id, cancellationToken)).DeletedCount > 0;
    }

    public Task SaveAsync(UserControls controls, CancellationToken cancellationToken) =>
        _controls.ReplaceOneAsync(c => c.Id == controls.Id, controls, new ReplaceOptions { IsUpsert = true }, cancellationToken);
}
