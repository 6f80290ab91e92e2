using System.Globalization;
using System.Text.Json;
using AddOnEvents.Contracts;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>A request parameter that is invalid or not supported, named by its OpenAI field, with what to fix.</summary>
public sealed record ParameterError(string Param, string Message);

/// <summary>
/// Checks the sampling parameters of an OpenAI chat request against OpenAI's documented ranges, and rejects the
/// parameters that AddOnEvents cannot honour instead of dropping them, since a dropped parameter changes the completion
/// without the caller noticing.
/// </summary>
public static class OpenAISampling
{
    /// <summary>OpenAI's limit on the number of stop sequences in one request.</summary>
    public const int MaxStopSequences = 4;

    /// <summary>
    /// Reads the sampling parameters of <paramref name="request"/>. Returns null options when the request sets
    /// none, or the first invalid or unsupported parameter.
    /// </summary>
    public static (SamplingOptions? Options, ParameterError? Error) Read(OpenAIChatRequest request)
    {
        if (Unsupported(request) is { } unsupported)
        {
            return (null, unsupported);
        }

        var outOfRange = OutOfRange("temperature", request.Temperature, 0, 2)
            ?? OutOfRange("top_p", request.TopP, 0, 1)
            ?? OutOfRange("presence_penalty", request.PresencePenalty, -2, 2)
            ?? OutOfRange("frequency_penalty", request.FrequencyPenalty, -2, 2);
        if (outOfRange is not null)
        {
            return (null, outOfRange);
        }

        if (request.Seed is < int.MinValue or > int.MaxValue)
        {
            // The upstream client (Betalgo.Ranul.OpenAI 9.2.6) carries the seed as a 32-bit integer.
            return (null, new ParameterError("seed", string.Create(CultureInfo.InvariantCulture,
                $"seed must be an integer between {int.MinValue} and {int.MaxValue}.")));
        }

        var (stop, stopError) = ReadStop(request.Stop);
        if (stopError is not null)
        {
            return (null, stopError);
        }

        var (responseFormat, formatError) = ReadResponseFormat(request.ResponseFormat);
        if (formatError is not null)
        {
            return (null, formatError);
        }

        var options = new SamplingOptions
        {
            Temperature = request.Temperature,
            TopP = request.TopP,
            Stop = stop,
            Seed = (int?)request.Seed,
            PresencePenalty = request.PresencePenalty,
            FrequencyPenalty = request.FrequencyPenalty,
            ResponseFormat = responseFormat,
        };
        return (options == new SamplingOptions() ? null : options, null);
    }

    /// <summary>Rejects parameters whose effect AddOnEvents cannot deliver, because a response carries one text choice only.</summary>
    private static ParameterError? Unsupported(OpenAIChatRequest request)
    {
        if (request.N is not null and not 1)
        {
            return new ParameterError("n", "n must be 1: AddOnEvents returns one choice per request.");
        }

        if (request.Logprobs == true)
        {
            return new ParameterError("logprobs", "logprobs is not supported: AddOnEvents returns the completion text without log probabilities.");
        }

        if (IsSet(request.TopLogprobs))
        {
            return new ParameterError("top_logprobs", "top_logprobs is not supported: AddOnEvents returns the completion text without log probabilities.");
        }

        if (IsSet(request.LogitBias) && !(request.LogitBias.ValueKind == JsonValueKind.Object && !request.LogitBias.EnumerateObject().Any()))
        {
            return new ParameterError("logit_bias", "logit_bias is not supported. Remove it from the request.");
        }

        return null;
    }

    private static ParameterError? OutOfRange(string param, double? value, double min, double max) =>
        value is { } number && (double.IsNaN(number) || number < min || number > max)
            ? new ParameterError(param, string.Create(CultureInfo.InvariantCulture, $"{param} must be between {min} and {max}."))
            : null;

    /// <summary>Reads <c>stop</c>, which OpenAI accepts as one string or an array of strings.</summary>
    private static (IReadOnlyList<string>? Stop, ParameterError? Error) ReadStop(JsonElement stop)
    {
        const string Shape = "stop must be a string or an array of at most 4 strings.";
        switch (stop.ValueKind)
        {
            case JsonValueKind.Undefined or JsonValueKind.Null:
                return (null, null);
            case JsonValueKind.String:
                return ([stop.GetString()!], null);
            case JsonValueKind.Array:
                if (stop.GetArrayLength() > MaxStopSequences || stop.EnumerateArray().Any(s => s.ValueKind != JsonValueKind.String))
                {
                    return (null, new ParameterError("stop", Shape));
                }

                var sequences = stop.EnumerateArray().Select(s => s.GetString()!).ToList();
                return (sequences.Count == 0 ? null : sequences, null);
            default:
                return (null, new ParameterError("stop", Shape));
        }
    }

    /// <summary>Reads <c>response_format</c>: its type "text" or "json_object", or an error for any other shape.</summary>
    private static (string? Type, ParameterError? Error) ReadResponseFormat(JsonElement format)
    {
        if (!IsSet(format))
        {
            return (null, null);
        }

        if (format.ValueKind != JsonValueKind.Object
            || !format.TryGetProperty("type", out var type)
            || type.ValueKind != JsonValueKind.String)
        {
            return (null, new ParameterError("response_format",
                "response_format must be an object with a type of text or json_object, such as {\"type\": \"json_object\"}."));
        }

        return type.GetString() switch
        {
            "text" or "json_object" => (type.GetString(), null),
            "json_schema" => (null, new ParameterError("response_format",
                "response_format type json_schema is not supported. Use {\"type\": \"json_object\"} and describe the schema in the messages.")),
            var other => (null, new ParameterError("response_format",
                $"response_format {Describe(other!)} is not supported. Use text or json_object.")),
        };
    }

    private static string Describe(string type) => IsTypeName(type) ? $"type '{type}'" : "of this type";

    /// <summary>
    /// Tells whether a caller's type value is shaped like OpenAI's type names (image_url, json_object), so an error
    /// may repeat it. The field can contain anything the caller pasted, such as an API key, and error responses can
    /// end up in logs.
    /// </summary>
    internal static bool IsTypeName(string type) =>
        type.Length is > 0 and <= 32 && type.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_');

    private static bool IsSet(JsonElement element) => element.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null);
}
