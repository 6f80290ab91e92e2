using System.Net;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Endpoint of <see cref="FakeUpstream"/> that a <see cref="ScriptedResponse"/> is queued for.</summary>
public enum FakeEndpoint
{
    ChatCompletions,
    Models,
}

/// <summary>Token counts that a scripted completion reports instead of the word counts the fake computes.</summary>
public sealed record ScriptedUsage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>
/// One canned reply of <see cref="FakeUpstream"/>. A reply with a <see cref="Body"/> is sent as-is. A reply without
/// one is a chat completion built from <see cref="Text"/> or <see cref="StreamPieces"/>, sent as JSON or as
/// server-sent events depending on the request's "stream" flag.
/// </summary>
public sealed record ScriptedResponse
{
    public int StatusCode { get; init; } = 200;

    /// <summary>Raw response body. When it is set, the completion properties are ignored.</summary>
    public string? Body { get; init; }

    public string ContentType { get; init; } = "application/json";

    /// <summary>Completion text, split at whitespace for a stream request unless <see cref="StreamPieces"/> is set.</summary>
    public string? Text { get; init; }

    public string FinishReason { get; init; } = "stop";

    /// <summary>Reported usage, or null for the word counts of the request messages and of the completion text.</summary>
    public ScriptedUsage? Usage { get; init; }

    /// <summary>Content deltas of a streamed completion in order, concatenated for a non-stream request.</summary>
    public IReadOnlyList<string>? StreamPieces { get; init; }

    /// <summary>Pause before each streamed piece after the first.</summary>
    public TimeSpan PieceDelay { get; init; }

    /// <summary>Pause before the status line is sent, during which the client can cancel.</summary>
    public TimeSpan Delay { get; init; }

    /// <summary>Response headers added to the reply, such as Retry-After.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Number of streamed content pieces after which the fake aborts the TCP connection without the final chunk or
    /// [DONE]. A non-stream request with this set gets the connection aborted before any response byte.
    /// </summary>
    public int? DisconnectAfterPieces { get; init; }

    public FakeEndpoint Endpoint { get; init; } = FakeEndpoint.ChatCompletions;

    /// <summary>Creates a 200 chat completion with <paramref name="text"/> as the assistant message.</summary>
    /// <summary>Raw bytes written and flushed one chunk at a time, with <see cref="PieceDelay"/> between chunks.</summary>
    public IReadOnlyList<byte[]>? RawChunks { get; init; }

    /// <summary>
    /// A server-sent event stream cut into the given byte chunks, to exercise a client's parser on events split
    /// across network reads, inside a line or inside a multi-byte character.
    /// </summary>
    public static ScriptedResponse RawStream(IEnumerable<byte[]> chunks, TimeSpan chunkDelay) =>
        new() { RawChunks = chunks.ToList(), PieceDelay = chunkDelay, ContentType = "text/event-stream" };

    public static ScriptedResponse Answer(string text, string finishReason = "stop") =>
        new() { Text = text, FinishReason = finishReason };

    /// <summary>Creates a streamed completion made of <paramref name="pieces"/>, sent <paramref name="pieceDelay"/> apart.</summary>
    public static ScriptedResponse Streamed(IEnumerable<string> pieces, TimeSpan pieceDelay, string finishReason = "stop") =>
        new() { StreamPieces = pieces.ToArray(), PieceDelay = pieceDelay, FinishReason = finishReason };

    /// <summary>
    /// Creates an OpenAI-shaped error body. The code and message default to what OpenAI sends for that status.
    /// </summary>
    public static ScriptedResponse Error(int status, string? code = null, string? message = null)
    {
        var (defaultType, defaultCode, defaultMessage) = DescribeStatus(status);
        string? effectiveCode = code ?? defaultCode;

        // OpenAI reports an exhausted quota with its own error type, not the rate-limit type "requests".
        string type = effectiveCode == "insufficient_quota" ? "insufficient_quota" : defaultType;

        return new ScriptedResponse
        {
            StatusCode = status,
            Body = FakeUpstream.ErrorBody(message ?? defaultMessage, type, effectiveCode),
        };
    }

    /// <summary>Creates a 429 rate-limit error with the given Retry-After header value (seconds or an HTTP date).</summary>
    public static ScriptedResponse RateLimited(string retryAfter) =>
        Error(429) with { Headers = new Dictionary<string, string> { ["Retry-After"] = retryAfter } };

    /// <summary>Creates an HTML error page such as a proxy in front of the API returns.</summary>
    public static ScriptedResponse Html(int status)
    {
        string title = $"{status} {ReasonPhrase(status)}";
        return Raw(
            status,
            $"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
            "text/html");
    }

    public static ScriptedResponse Raw(int status, string body, string contentType) =>
        new() { StatusCode = status, Body = body, ContentType = contentType };

    /// <summary>Returns <paramref name="inner"/> sent only after <paramref name="delay"/>.</summary>
    public static ScriptedResponse Slow(TimeSpan delay, ScriptedResponse inner) => inner with { Delay = delay };

    /// <summary>Returns a copy queued for GET /v1/models instead of chat completions.</summary>
    public ScriptedResponse ForModels() => this with { Endpoint = FakeEndpoint.Models };

    private static (string Type, string? Code, string Message) DescribeStatus(int status) => status switch
    {
        400 => ("invalid_request_error", null, "Invalid request."),
        401 => ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
        403 => ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
        404 => ("invalid_request_error", "model_not_found", "The model `gpt-4o-mini` does not exist or you do not have access to it."),
        429 => ("requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
        >= 500 => ("server_error", null, "The server had an error while processing your request. Sorry about that!"),
        _ => ("invalid_request_error", null, $"Request failed with status {status}."),
    };

    private static string ReasonPhrase(int status) => status switch
    {
        502 => "Bad Gateway",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => Enum.IsDefined(typeof(HttpStatusCode), status) ? ((HttpStatusCode)status).ToString() : "Error",
    };
}
