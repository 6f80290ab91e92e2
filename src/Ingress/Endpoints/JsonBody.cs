using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using AddOnEvents.Contracts;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>Reads a JSON request body and turns every way it can be wrong into an <see cref="ApiError"/> response.</summary>
public static partial class JsonBody
{
    /// <summary>Matches paths such as <c>$.messages[0].content</c> and captures each field name.</summary>
    [GeneratedRegex(@"^\$(?:\.(?<name>[A-Za-z_][A-Za-z0-9_]{0,39})|\[[0-9]{1,6}\])+$")]
    private static partial Regex FieldPath();

    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request) where T : class
    {
        var (value, error) = await ReadOrFailAsync<T>(request);
        return (value, error is null ? null : ApiErrors.Result(error.Status, error.Code, error.Message));
    }

    /// <summary>Reads the body like <see cref="ReadAsync"/>, with the failure as data, for endpoints that write errors in another shape.</summary>
    public static async Task<(T? Value, BodyError? Error)> ReadOrFailAsync<T>(HttpRequest request) where T : class
    {
        if (!request.HasJsonContentType())
        {
            return (null, new BodyError(StatusCodes.Status415UnsupportedMediaType, ErrorCodes.InvalidRequest,
                "Send the body as JSON with the header Content-Type: application/json."));
        }

        try
        {
            var value = await request.ReadFromJsonAsync<T>(request.HttpContext.RequestAborted);
            return value is null ? (null, new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, "The body is empty; send a JSON object.")) : (value, null);
        }
        catch (JsonException ex)
        {
            // Only a JSON path made of field names is echoed, never the exception text, because that can quote the
            // body, and the body can contain a key.
            string where = ex.Path is { } path && IsOwnFieldPath<T>(path) ? $" Check the field at {path}." : "";
            return (null, new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "The body is not a valid JSON object of the expected shape." + where));
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            bool prompt = request.Path.StartsWithSegments("/api/prompts") || request.Path.StartsWithSegments("/v1");
            return (null, new BodyError(StatusCodes.Status413PayloadTooLarge, prompt ? ErrorCodes.PromptTooLong : ErrorCodes.InvalidRequest,
                prompt ? "The request body is too large. Shorten the prompt." : "The request body is too large."));
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

    /// <summary>The JSON names of the properties of <typeparamref name="T"/> and of the types its properties hold, case-insensitive.</summary>
    private static class FieldNames<T>
    {
        public static readonly HashSet<string> All = Collect(typeof(T), new HashSet<string>(StringComparer.OrdinalIgnoreCase), depth: 0);

        private static HashSet<string> Collect(Type type, HashSet<string> names, int depth)
        {
            foreach (var property in type.GetProperties())
            {
                names.Add(property.GetCustomAttributes(typeof(JsonPropertyNameAttribute), false) is [JsonPropertyNameAttribute named]
                    ? named.Name
                    : JsonNamingPolicy.CamelCase.ConvertName(property.Name));
                var valueType = property.PropertyType.IsGenericType ? property.PropertyType.GetGenericArguments()[0] : property.PropertyType;
                if (depth < 3 && valueType.IsClass && valueType != typeof(string))
                {
                    Collect(valueType, names, depth + 1);
                }
            }

            return names;
        }
    }
}

/// <summary>Why a request body could not be read: the status, the stable code and what to fix.</summary>
public sealed record BodyError(int Status, string Code, string Message);
