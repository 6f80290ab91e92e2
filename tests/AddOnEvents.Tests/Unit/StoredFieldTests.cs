using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using MongoDB.Bson;
using MongoDB.Bson.Serialization;
using MongoDB.Driver;

namespace AddOnEvents.Tests.Unit;

public sealed class StoredFieldTests
{
    // The test assembly registers the stores' conventions when it loads, so this map has their element names.
    private readonly RenderArgs<PromptResultDocument> _args =
        new(BsonSerializer.LookupSerializer<PromptResultDocument>(), BsonSerializer.SerializerRegistry);

    [Fact]
    public void RendersAsTheMemberExpressionDoes()
    {
        var id = Guid.NewGuid();
        var filter = Builders<PromptResultDocument>.Filter;
        var update = Builders<PromptResultDocument>.Update;
        var usage = new TokenUsage(3, 4, 7);

        Assert.Equal(
            (filter.Eq(r => r.RequestId, id) & filter.Eq(r => r.Status, PromptStatus.Pending)).Render(_args),
            (filter.Eq(new StoredField<PromptResultDocument, Guid>(r => r.RequestId), id)
                & filter.Eq(new StoredField<PromptResultDocument, string>(r => r.Status), PromptStatus.Pending)).Render(_args));
        Assert.Equal(
            update.Set(r => r.Usage, usage).Set(r => r.RetryAfterSeconds, 5).Render(_args),
            update.Set(new StoredField<PromptResultDocument, TokenUsage?>(r => r.Usage), usage)
                .Set(new StoredField<PromptResultDocument, int?>(r => r.RetryAfterSeconds), 5).Render(_args));
    }

    [Fact]
    public void RendersIdWithItsSerializer()
    {
        var field = new StoredField<PromptResultDocument, Guid>(r => r.RequestId);
        var id = Guid.NewGuid();

        var first = Builders<PromptResultDocument>.Filter.Eq(field, id).Render(_args);
        var again = Builders<PromptResultDocument>.Filter.Eq(field, id).Render(_args);

        Assert.Equal(new BsonDocument("_id", new BsonBinaryData(id, GuidRepresentation.Standard)), first);
        Assert.Equal(first, again);
        Assert.Equal("retryAfterSeconds", new StoredField<PromptResultDocument, int?>(r => r.RetryAfterSeconds).Render(_args).FieldName);
    }

    [Fact]
    public void RendersAgainForOtherSerializer()
    {
        var field = new StoredField<PromptResultDocument, string>(r => r.Status);
        var renamed = new BsonClassMapSerializer<PromptResultDocument>(RenamedStatusMap());

        Assert.Equal("status", field.Render(_args).FieldName);
        Assert.Equal("state", field.Render(_args with { DocumentSerializer = renamed }).FieldName);
        Assert.Equal("status", field.Render(_args).FieldName);
    }

    private static BsonClassMap<PromptResultDocument> RenamedStatusMap()
    {
        var map = new BsonClassMap<PromptResultDocument>();
        map.AutoMap();
        map.MapMember(r => r.Status).SetElementName("state");
        map.Freeze();
        return map;
    }
}
