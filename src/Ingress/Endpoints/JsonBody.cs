using System.Buffers;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using System.Text.RegularExpressions;
using AddOnEvents.Contracts;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>Reads a JSON request body and turns every way it can be wrong into an <see cref="ApiError"/> response.</summary>
/// <remarks>
/// Bodies are read strictly unless the caller asks otherwise: a field the request type does not have, or a field
/// given twice, gets 400. The <c>/v1</c> endpoints follow OpenAI's API, whose SDKs send fields this service does
/// not read (<c>user</c>, <c>store</c>, <c>metadata</c>), so they skip unknown fields and a repeated field keeps its
/// last value.
/// <para>
/// An endpoint can pass field rules: for each top-level field name, the message of the endpoint's own range check
/// for that field. A value of the wrong type in that field then gets the same message, so the error gives the
/// endpoint's range rather than the range of the .NET type.
/// </para>
/// </remarks>
public static partial class JsonBody
{
    /// <summary>Matches paths such as <c>$.messages[0].content</c> and captures each field name and each array index.</summary>
    [GeneratedRegex(@"^\$(?:\.(?<name>[A-Za-z_][A-Za-z0-9_]{0,39})|\[(?<index>[0-9]{1,6})\])+$")]
    private static partial Regex FieldPath();

    /// <summary>
    /// The Web defaults that ASP.NET Core reads bodies with (camelCase names, matched without regard to case), plus
    /// the rejection of unknown and repeated fields and of numbers sent as strings.
    /// </summary>
    private static readonly JsonSerializerOptions Strict = new(JsonSerializerDefaults.Web)
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        AllowDuplicateProperties = false,
        NumberHandling = JsonNumberHandling.Strict,
        TypeInfoResolver = new DefaultJsonTypeInfoResolver { Modifiers = { RemoveUnsettableProperties } },
    };

    /// <summary>The Web defaults with only the rejection of repeated fields, to find out why a strict read failed.</summary>
    private static readonly JsonSerializerOptions WithoutUnknownFieldCheck = new(JsonSerializerDefaults.Web)
    {
        AllowDuplicateProperties = false,
        NumberHandling = JsonNumberHandling.Strict,
    };

    /// <summary>The Web defaults with the type checks of <see cref="Strict"/> only, to tell a repeated field from a value of the wrong type.</summary>
    private static readonly JsonSerializerOptions TypeChecksOnly = new(JsonSerializerDefaults.Web)
    {
        NumberHandling = JsonNumberHandling.Strict,
    };

    /// <summary>How errors name the JSON they describe: a request body of an endpoint, or an argument of a hub method.</summary>
    private sealed record Source(string Noun, string Receiver);

    private static readonly Source Body = new("body", "endpoint");

    private static readonly Source HubArgument = new("argument", "hub method");

    /// <summary>The maximum nesting depth that the serializer uses when <see cref="JsonSerializerOptions.MaxDepth"/> is 0.</summary>
    private const int DefaultMaxDepth = 64;

    /// <summary>What <see cref="FindHiddenCause"/> found in JSON that the serializer failed to read.</summary>
    private enum HiddenCause
    {
        None,
        TooDeep,
        InvalidStringEscape,
    }

    /// <param name="fieldRules">Range-check messages by top-level field name, as described on <see cref="JsonBody"/>.</param>
    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request, IReadOnlyDictionary<string, string>? fieldRules = null)
        where T : class
    {
        var (value, error) = await ReadOrFailAsync<T>(request, fieldRules: fieldRules);
        return (value, error is null ? null : ApiErrors.Result(error.Status, error.Code, error.Message));
    }

    /// <summary>
    /// Reads a hub method's JSON argument with the rules of a request body outside <c>/v1</c>, so that the hub and
    /// the HTTP API accept the same input.
    /// </summary>
    public static async Task<(T? Value, BodyError? Error)> ReadArgumentAsync<T>(JsonElement argument,
        IReadOnlyDictionary<string, string>? fieldRules = null) where T : class =>
        await ReadStrictAsync(options => ValueTask.FromResult(argument.Deserialize<T>(options)),
            () => ValueTask.FromResult(JsonMarshal.GetRawUtf8Value(argument).ToArray()), HubArgument, fieldRules);

    /// <summary>Reads the body like <see cref="ReadAsync"/>, with the failure as data, for endpoints that write errors in another shape.</summary>
    /// <param name="skipUnknownFields">
    /// Skips fields the request type does not have and keeps the last value of a repeated field, for request types
    /// whose clients send fields that this service does not read.
    /// </param>
    /// <param name="fieldRules">Range-check messages by top-level field name, as described on <see cref="JsonBody"/>.</param>
    public static async Task<(T? Value, BodyError? Error)> ReadOrFailAsync<T>(HttpRequest request, bool skipUnknownFields = false,
        IReadOnlyDictionary<string, string>? fieldRules = null) where T : class
    {
        if (!request.HasJsonContentType())
        {
            return (null, new BodyError(StatusCodes.Status415UnsupportedMediaType, ErrorCodes.InvalidRequest,
                "Send the body as JSON with the header Content-Type: application/json."));
        }

        if (!HasSupportedCharset(request))
        {
            return (null, new BodyError(StatusCodes.Status415UnsupportedMediaType, ErrorCodes.InvalidRequest,
                "The charset of the Content-Type header is not supported. Send the body as UTF-8 with Content-Type: application/json."));
        }

        try
        {
            // The threshold keeps the copy in memory instead of a temporary file, because the body can contain prompt
            // text. Kestrel's MaxRequestBodySize (set in IngressApp) bounds its size.
            request.EnableBuffering(bufferThreshold: int.MaxValue);
            if (await CheckBytesAsync(request) is { } bytesError)
            {
                return (null, bytesError);
            }

            return skipUnknownFields
                ? await ReadLenientAsync<T>(request, fieldRules)
                : await ReadStrictAsync(options => DeserializeFromStartAsync<T>(request, options), () => ReadUtf8FromStartAsync(request), Body,
                    fieldRules);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            bool prompt = request.Path.StartsWithSegments("/api/prompts") || request.Path.StartsWithSegments("/v1");
            return (null, new BodyError(StatusCodes.Status413PayloadTooLarge, prompt ? ErrorCodes.PromptTooLong : ErrorCodes.InvalidRequest,
                prompt ? "The request body is too large. Shorten the prompt." : "The request body is too large."));
        }
    }

    /// <summary>
    /// Deserializes with <see cref="Strict"/>. When that fails, deserializes again with one check less at a time to
    /// tell an unknown field from a repeated one, because the exception text names the field and can therefore
    /// quote whatever the caller sent.
    /// </summary>
    /// <param name="deserialize">Deserializes the whole JSON from its start with the given options. It is called up to three times.</param>
    /// <param name="readUtf8">Returns the whole JSON as UTF-8, to find the cause of a failed read.</param>
    private static async Task<(T? Value, BodyError? Error)> ReadStrictAsync<T>(Func<JsonSerializerOptions, ValueTask<T?>> deserialize,
        Func<ValueTask<byte[]>> readUtf8, Source source, IReadOnlyDictionary<string, string>? fieldRules) where T : class
    {
        try
        {
            var value = await deserialize(Strict);
            return value is null ? (null, NullJson(source)) : (value, null);
        }
        catch (JsonException)
        {
            JsonException repeatedField;
            try
            {
                await deserialize(WithoutUnknownFieldCheck);
                return (null, UnknownField<T>(source));
            }
            catch (JsonException ex)
            {
                repeatedField = ex;
            }

            try
            {
                // This read has neither check, so it throws only for JSON that is not valid or has a value of the
                // wrong type.
                await deserialize(TypeChecksOnly);
                return (null, DuplicateField<T>(repeatedField, source));
            }
            catch (JsonException ex)
            {
                return (null, await ReadFailureAsync<T>(ex, readUtf8, EffectiveMaxDepth(TypeChecksOnly), source, fieldRules));
            }
        }
    }

    /// <summary>
    /// Deserializes the buffered body with the JSON options of ASP.NET Core's <c>ReadFromJsonAsync</c>, which skip
    /// unknown fields and read numbers sent as strings.
    /// </summary>
    private static async Task<(T? Value, BodyError? Error)> ReadLenientAsync<T>(HttpRequest request, IReadOnlyDictionary<string, string>? fieldRules)
        where T : class
    {
        var options = request.HttpContext.RequestServices.GetRequiredService<IOptions<JsonOptions>>().Value.SerializerOptions;
        try
        {
            var value = await DeserializeFromStartAsync<T>(request, options);
            return value is null ? (null, NullJson(Body)) : (value, null);
        }
        catch (JsonException ex)
        {
            return (null, await ReadFailureAsync<T>(ex, () => ReadUtf8FromStartAsync(request), EffectiveMaxDepth(options), Body, fieldRules));
        }
    }

    /// <summary>
    /// Reads the whole body into its buffer and returns the error for a body that is empty or, when it is declared as
    /// UTF-8 or has no charset, not valid UTF-8. Returns null otherwise.
    /// </summary>
    /// <remarks>
    /// The reader checks UTF-8 only where it decodes a string, and then fails as for a value of the wrong type. It
    /// does not check a <see cref="JsonElement"/>, whose text is decoded later, so the bytes are checked before reading.
    /// </remarks>
    private static async Task<BodyError?> CheckBytesAsync(HttpRequest request)
    {
        var decoder = NonUtf8Encoding(request) is null
            ? new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true).GetDecoder()
            : null;
        byte[] chunk = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            long total = 0;
            int read;
            while ((read = await request.Body.ReadAsync(chunk, request.HttpContext.RequestAborted)) > 0)
            {
                total += read;
                // The decoder keeps a sequence that a chunk boundary splits until the next chunk completes it.
                decoder?.GetCharCount(chunk, 0, read, flush: false);
            }

            decoder?.GetCharCount([], 0, 0, flush: true);
            return total == 0 ? EmptyJson(Body) : null;
        }
        catch (DecoderFallbackException)
        {
            return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "The body is not valid UTF-8. Send the JSON encoded as UTF-8, or name its encoding in the charset of the Content-Type header.");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk, clearArray: true);
        }
    }

    /// <summary>
    /// Deserializes the buffered body from its first byte, converted to UTF-8 from the charset of the Content-Type
    /// header as ASP.NET Core's <c>ReadFromJsonAsync</c> does.
    /// </summary>
    /// <remarks>
    /// The stream is read directly, because in ASP.NET Core 10 <c>ReadFromJsonAsync</c> reads through
    /// <see cref="HttpRequest.BodyReader"/>, which keeps the bytes it has already read, so a rewind of the stream does
    /// not reach it.
    /// </remarks>
    private static async ValueTask<T?> DeserializeFromStartAsync<T>(HttpRequest request, JsonSerializerOptions options)
    {
        var cancellationToken = request.HttpContext.RequestAborted;
        request.Body.Position = 0;
        if (NonUtf8Encoding(request) is not { } encoding)
        {
            return await JsonSerializer.DeserializeAsync<T>(request.Body, options, cancellationToken);
        }

        await using var utf8 = Encoding.CreateTranscodingStream(request.Body, encoding, Encoding.UTF8, leaveOpen: true);
        return await JsonSerializer.DeserializeAsync<T>(utf8, options, cancellationToken);
    }

    /// <summary>Returns the buffered body from its first byte as UTF-8, converted as <see cref="DeserializeFromStartAsync"/> converts it.</summary>
    private static async ValueTask<byte[]> ReadUtf8FromStartAsync(HttpRequest request)
    {
        var cancellationToken = request.HttpContext.RequestAborted;
        request.Body.Position = 0;
        using var copy = new MemoryStream();
        if (NonUtf8Encoding(request) is not { } encoding)
        {
            await request.Body.CopyToAsync(copy, cancellationToken);
            return copy.ToArray();
        }

        await using var utf8 = Encoding.CreateTranscodingStream(request.Body, encoding, Encoding.UTF8, leaveOpen: true);
        await utf8.CopyToAsync(copy, cancellationToken);
        return copy.ToArray();
    }

    /// <summary>Returns the encoding that the charset of the Content-Type header names, or null when it names UTF-8 or none.</summary>
    private static Encoding? NonUtf8Encoding(HttpRequest request)
    {
        var encoding = MediaTypeHeaderValue.TryParse(request.ContentType, out var contentType) ? contentType.Encoding : null;
        return encoding is null || encoding.CodePage == Encoding.UTF8.CodePage ? null : encoding;
    }

    /// <summary>
    /// Tells whether .NET can decode the charset that the Content-Type header names, or none is named. Reading the
    /// encoding of UTF-7, which .NET 5 and later disable, throws.
    /// </summary>
    private static bool HasSupportedCharset(HttpRequest request)
    {
        if (!MediaTypeHeaderValue.TryParse(request.ContentType, out var contentType) || StringSegment.IsNullOrEmpty(contentType.Charset))
        {
            return true;
        }

        // The getter returns null for a charset that .NET does not support, rather than throwing.
        try
        {
            return contentType.Encoding is not null;
        }
        catch (Exception ex) when (ex is NotSupportedException or ArgumentException)
        {
            return false;
        }
    }

    private static BodyError EmptyJson(Source source) =>
        new(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, $"The {source.Noun} is empty. Send a JSON object.");

    private static BodyError NullJson(Source source) =>
        new(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, $"The {source.Noun} is null. It must be a JSON object.");

    private static int EffectiveMaxDepth(JsonSerializerOptions options) => options.MaxDepth == 0 ? DefaultMaxDepth : options.MaxDepth;

    /// <summary>
    /// Creates the error for JSON that the serializer failed to read. It first scans the JSON for the two causes that
    /// the serializer reports as other failures.
    /// </summary>
    private static async Task<BodyError> ReadFailureAsync<T>(JsonException ex, Func<ValueTask<byte[]>> readUtf8, int maxDepth, Source source,
        IReadOnlyDictionary<string, string>? fieldRules)
    {
        bool syntaxError = ex.InnerException is JsonException;
        var cause = FindHiddenCause(await readUtf8(), maxDepth);
        if (syntaxError && cause == HiddenCause.TooDeep)
        {
            return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, string.Create(CultureInfo.InvariantCulture,
                $"The {source.Noun} is nested too deeply. Objects and arrays may be nested at most {maxDepth} levels deep, counting the outermost one."));
        }

        if (!syntaxError && cause == HiddenCause.InvalidStringEscape)
        {
            string where = ex.Path is { } path && IsOwnFieldPath<T>(path) ? $" Check the field at {path}." : "";
            return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                $"The {source.Noun} contains a string with an invalid escape, so the string is not valid Unicode. A \\u escape from D800 to DFFF "
                + $"must be a high surrogate followed by a low surrogate.{where}");
        }

        return ShapeError<T>(ex, source, fieldRules);
    }

    /// <summary>
    /// Scans JSON for two failures that the serializer reports as other failures. It reports nesting deeper than
    /// <paramref name="maxDepth"/> as JSON that is not valid, and a <c>\u</c> escape that is not valid UTF-16, such as
    /// a lone surrogate, as a value of the wrong type. Returns <see cref="HiddenCause.None"/> when a syntax error comes first.
    /// </summary>
    private static HiddenCause FindHiddenCause(ReadOnlySpan<byte> utf8, int maxDepth)
    {
        // One level more than the serializer allows, so that this reader reaches the array or object that the
        // serializer's reader rejected.
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { MaxDepth = maxDepth + 1 });
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType is (JsonTokenType.StartObject or JsonTokenType.StartArray) && reader.CurrentDepth >= maxDepth)
                {
                    return HiddenCause.TooDeep;
                }

                if (reader.TokenType is (JsonTokenType.String or JsonTokenType.PropertyName) && reader.ValueIsEscaped)
                {
                    // Throws InvalidOperationException for an escape that does not decode to valid UTF-16.
                    _ = reader.GetString();
                }
            }
        }
        catch (JsonException)
        {
            return HiddenCause.None;
        }
        catch (InvalidOperationException)
        {
            return HiddenCause.InvalidStringEscape;
        }

        return HiddenCause.None;
    }

    /// <summary>
    /// Describes an unknown field by the fields that are accepted, never by its own name, so that a key pasted in
    /// place of a field name is not sent back.
    /// </summary>
    /// <remarks>NOTE: the list has only top-level names, so an unknown field inside a nested object gets a list without the names it could mean.</remarks>
    private static BodyError UnknownField<T>(Source source) =>
        new(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
            $"The {source.Noun} has a field that this {source.Receiver} does not accept. Check the spelling of each field name. Accepted fields: "
            + string.Join(", ", FieldNames<T>.TopLevel) + ".");

    private static BodyError DuplicateField<T>(JsonException ex, Source source)
    {
        string field = ex.Path is { } path && IsOwnFieldPath<T>(path) ? $"the field at {path}" : "a field";
        return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
            $"The {source.Noun} has {field} more than once. Field names are matched without regard to case, so send each field once in one spelling.");
    }

    private static BodyError ShapeError<T>(JsonException ex, Source source, IReadOnlyDictionary<string, string>? fieldRules)
    {
        // The serializer wraps the reader's exception when the text is not valid JSON.
        if (ex.InnerException is JsonException)
        {
            return SyntaxError(ex, source);
        }

        // Only a JSON path made of field names and the type its property expects are sent back, never the exception
        // text, because that can quote the JSON, and the JSON can contain a key.
        const string NotExpectedShape = "is not a valid JSON object of the expected shape.";
        if (ex.Path == "$")
        {
            return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                $"The {source.Noun} must be a JSON object, not an array, string, number or boolean.");
        }

        if (ex.Path is not { } path || !IsOwnFieldPath<T>(path))
        {
            return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, $"The {source.Noun} {NotExpectedShape}");
        }

        string? field = TopLevelField<T>(path);
        string? rule = null;
        if (field is not null && string.Equals(path, "$." + field, StringComparison.OrdinalIgnoreCase))
        {
            fieldRules?.TryGetValue(field, out rule);
        }

        string? expected = rule is null && ExpectedJsonType<T>(path) is { } type ? $"it must be {type}." : rule;
        string where = expected is null ? $" Check the field at {path}." : $" Check the field at {path}: {expected}";
        return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, $"The {source.Noun} {NotExpectedShape}{where}", field);
    }

    /// <summary>
    /// Creates the error for JSON that cannot be parsed. It gives the line and byte where parsing stopped, counted from
    /// 1 as editors count, and never the text there, because the body can contain a key or prompt text.
    /// </summary>
    private static BodyError SyntaxError(JsonException ex, Source source)
    {
        string position = ex is { LineNumber: { } line, BytePositionInLine: { } bytePosition }
            ? string.Create(CultureInfo.InvariantCulture, $" Parsing stopped at line {line + 1}, byte {bytePosition + 1} of that line.")
            : "";
        return new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
            $"The {source.Noun} is not valid JSON.{position} Check for a missing or extra comma, quote, colon or bracket, or for JSON cut short.");
    }

    /// <summary>
    /// Returns the name, as <typeparamref name="T"/> spells it, of the top-level field that a JSON path starts with,
    /// or null when the path starts with an array index or names no property of <typeparamref name="T"/>.
    /// </summary>
    private static string? TopLevelField<T>(string path)
    {
        var match = FieldPath().Match(path);
        if (!match.Success || !path.StartsWith("$.", StringComparison.Ordinal))
        {
            return null;
        }

        string name = match.Groups["name"].Captures[0].Value;
        return FieldNames<T>.TopLevel.FirstOrDefault(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>
    /// Finds the JSON type that the property at a path of <typeparamref name="T"/> is read from, such as "a string",
    /// or null when the path leads to no property or to one that takes more than one JSON type.
    /// </summary>
    private static string? ExpectedJsonType<T>(string path)
    {
        var match = FieldPath().Match(path);
        var segments = match.Groups["name"].Captures.Select(name => (name.Index, Name: (string?)name.Value))
            .Concat(match.Groups["index"].Captures.Select(index => (index.Index, Name: (string?)null)))
            .OrderBy(segment => segment.Index);
        var type = typeof(T);
        foreach (var (_, name) in segments)
        {
            var typeInfo = Strict.GetTypeInfo(type);
            if (name is null)
            {
                if (typeInfo is not { Kind: JsonTypeInfoKind.Enumerable, ElementType: { } elementType })
                {
                    return null;
                }

                type = elementType;
                continue;
            }

            var property = typeInfo.Kind == JsonTypeInfoKind.Object
                ? typeInfo.Properties.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
                : null;
            if (property is null)
            {
                return null;
            }

            type = property.PropertyType;
        }

        return JsonTypeName(Nullable.GetUnderlyingType(type) ?? type);
    }

    /// <summary>Names the JSON type that <see cref="Strict"/> reads a .NET type from, or null for a type that it reads from several.</summary>
    private static string? JsonTypeName(Type type)
    {
        if (type == typeof(string) || type == typeof(Guid) || type == typeof(DateTime) || type == typeof(DateTimeOffset))
        {
            return "a string";
        }

        if (type == typeof(bool))
        {
            return "a boolean (true or false)";
        }

        // The reader fails the same way for a number outside the type's range, so the message names the range.
        if (type == typeof(int))
        {
            return string.Create(CultureInfo.InvariantCulture, $"a whole number from {int.MinValue} to {int.MaxValue}");
        }

        if (type == typeof(long))
        {
            return string.Create(CultureInfo.InvariantCulture, $"a whole number from {long.MinValue} to {long.MaxValue}");
        }

        if (type == typeof(short) || type == typeof(byte) || type == typeof(uint) || type == typeof(ulong) || type == typeof(ushort)
            || type == typeof(sbyte))
        {
            return "a whole number";
        }

        if (type == typeof(double) || type == typeof(float) || type == typeof(decimal))
        {
            return "a number";
        }

        // Enums, JsonElement and object are left out, because their converters accept more than one JSON type.
        return type.IsEnum ? null : Strict.GetTypeInfo(type).Kind switch
        {
            JsonTypeInfoKind.Enumerable => "an array",
            JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary => "an object",
            _ => null,
        };
    }

    /// <summary>
    /// Removes the properties that reading cannot set, such as those marked <see cref="JsonIgnoreAttribute"/>. The
    /// serializer skips a field named after such a property without an error, and removing the property makes that
    /// field unknown, so it is rejected.
    /// </summary>
    private static void RemoveUnsettableProperties(JsonTypeInfo typeInfo)
    {
        if (typeInfo.Kind != JsonTypeInfoKind.Object)
        {
            return;
        }

        for (int index = typeInfo.Properties.Count - 1; index >= 0; index--)
        {
            var property = typeInfo.Properties[index];
            if (property.Set is null && property.AssociatedParameter is null)
            {
                typeInfo.Properties.RemoveAt(index);
            }
        }
    }

    /// <summary>
    /// Tells whether every field name in a JSON path is a property of the request type, so that a name a caller
    /// made up, such as a key pasted into broken JSON, is never repeated in the error.
    /// </summary>
    private static bool IsOwnFieldPath<T>(string path)
    {
        var match = FieldPath().Match(path);
        return match.Success && match.Groups["name"].Captures.All(name => FieldNames<T>.All.Contains(name.Value));
    }

    /// <summary>The JSON names that <see cref="Strict"/> accepts for <typeparamref name="T"/>.</summary>
    private static class FieldNames<T>
    {
        /// <summary>The names of the properties of <typeparamref name="T"/> itself, in declaration order.</summary>
        public static readonly IReadOnlyList<string> TopLevel = Strict.GetTypeInfo(typeof(T)).Properties.Select(p => p.Name).ToList();

        /// <summary>The names of the properties of <typeparamref name="T"/> and of the types its properties hold, case-insensitive.</summary>
        public static readonly HashSet<string> All = Collect(Strict.GetTypeInfo(typeof(T)), new HashSet<string>(StringComparer.OrdinalIgnoreCase), depth: 0);

        private static HashSet<string> Collect(JsonTypeInfo typeInfo, HashSet<string> names, int depth)
        {
            foreach (var property in typeInfo.Properties)
            {
                names.Add(property.Name);
                var valueInfo = Strict.GetTypeInfo(property.PropertyType);
                if (valueInfo is { Kind: JsonTypeInfoKind.Enumerable, ElementType: { } elementType })
                {
                    valueInfo = Strict.GetTypeInfo(elementType);
                }

                if (depth < 3 && valueInfo.Kind == JsonTypeInfoKind.Object)
                {
                    Collect(valueInfo, names, depth + 1);
                }
            }

            return names;
        }
    }
}

/// <summary>Why a request body could not be read: the status, the stable code and what to fix.</summary>
/// <param name="Field">The top-level field that contains a value of the wrong type, or null when no single field is at fault.</param>
public sealed record BodyError(int Status, string Code, string Message, string? Field = null);
