using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>
/// Reads whether an app exists and whether its add-on is active, straight from the <c>apps</c> collection with no
/// cache, so a deactivation stops upstream calls at once even where an Ingress instance still has the app cached.
/// </summary>
public sealed class AddonActivation(IMongoDatabase database)
{
    public const string Field = "addonActive";

    private readonly IMongoCollection<BsonDocument> _apps = database.GetCollection<BsonDocument>("apps");

    // Both reads run for every prompt, so they return only the field they need rather than the app's secrets and limits.
    private static readonly ProjectionDefinition<BsonDocument> ActiveOnly = Builders<BsonDocument>.Projection.Include(Field);
    private static readonly ProjectionDefinition<BsonDocument> IdOnly = Builders<BsonDocument>.Projection.Include("_id");

    public async Task<AddonState> StateAsync(string appId, CancellationToken cancellationToken)
    {
        var app = await _apps.Find(Builders<BsonDocument>.Filter.Eq("_id", appId)).Project(ActiveOnly).FirstOrDefaultAsync(cancellationToken);
        if (app is null)
        {
            return AddonState.AppRemoved;
        }

        return app.TryGetValue(Field, out var active) && active.IsBoolean && active.AsBoolean ? AddonState.Active : AddonState.Inactive;
    }

    public async Task<bool> ExistsAsync(string appId, CancellationToken cancellationToken) =>
        await _apps.Find(Builders<BsonDocument>.Filter.Eq("_id", appId)).Project(IdOnly).Limit(1).AnyAsync(cancellationToken);
}

/// <summary>State of an app's add-on as a worker reads it: active, switched off, or the app removed.</summary>
public enum AddonState
{
    Active,
    Inactive,
    AppRemoved,
}
