using System.Linq.Expressions;
using MongoDB.Bson.Serialization;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

/// <summary>
/// A field named by a member of the stored class, rendered once and reused. The driver translates an expression field
/// again on every render, and a lambda filter that captures a value also compiles a delegate each time. Measured with
/// MongoDB.Driver 3.14.0: 13-41 µs and 5-7 KB per filter, against 2-4 µs with fields rendered before. The reads and
/// writes made for every prompt use these.
/// </summary>
public sealed class StoredField<TDocument, TField>(Expression<Func<TDocument, TField>> member) : FieldDefinition<TDocument, TField>
{
    private readonly ExpressionFieldDefinition<TDocument, TField> _field = new(member);

    // One object, so a reader never sees a rendering paired with another serializer's.
    private Rendered? _last;

    public override RenderedFieldDefinition<TField> Render(RenderArgs<TDocument> args)
    {
        var last = _last;
        if (last is not null && ReferenceEquals(last.Serializer, args.DocumentSerializer))
        {
            return last.Field;
        }

        var field = _field.Render(args);
        _last = new Rendered(args.DocumentSerializer, field);
        return field;
    }

    private sealed record Rendered(IBsonSerializer Serializer, RenderedFieldDefinition<TField> Field);
}
