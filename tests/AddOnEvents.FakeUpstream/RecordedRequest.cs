using System.Text.Json.Nodes;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Chat message as the fake parsed it from a request body.</summary>
public sealed record RecordedMessage(string Role, string Content);

/// <summary>One HTTP request received by <see cref="FakeUpstream"/>, whatever its path or key.</summary>
public sealed class RecordedRequest
{
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _aborted;
    private int _statusCode;

    internal RecordedRequest(
        int sequence,
        string method,
        string path,
        string? bearerKey,
        IReadOnlyDictionary<string, string> headers,
        string body,
        JsonObject? json,
        DateTimeOffset receivedAt)
    {
        Sequence = sequence;
        Method = method;
        Path = path;
        BearerKey = bearerKey;
        Headers = headers;
        Body = body;
        ReceivedAt = receivedAt;
        Messages = ParseMessages(json);
        Model = ReadString(json, "model");
        Stream = json?["stream"] is JsonValue stream && stream.TryGetValue(out bool isStream) && isStream;
        IncludeUsage = json?["stream_options"]?["include_usage"] is JsonValue includeUsage
            && includeUsage.TryGetValue(out bool include) && include;
        MaxTokens = ReadInt(json, "max_completion_tokens") ?? ReadInt(json, "max_tokens");
    }

    /// <summary>Position in arrival order, starting at 1.</summary>
    public int Sequence { get; }

    public string Method { get; }

    /// <summary>Request path without the query string, such as "/v1/chat/completions".</summary>
    public string Path { get; }

    /// <summary>Token of an "Authorization: Bearer" header, or null when that header is missing or uses another scheme.</summary>
    public string? BearerKey { get; }

    /// <summary>Request headers by case-insensitive name, with repeated values joined by commas.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; }

    public string Body { get; }

    /// <summary>The "model" field of the JSON body, or null when it is missing or the body is not a JSON object.</summary>
    public string? Model { get; }

    /// <summary>Messages of a chat body, with array content flattened to its text parts.</summary>
    public IReadOnlyList<RecordedMessage> Messages { get; }

    public bool Stream { get; }

    /// <summary>The stream_options.include_usage flag.</summary>
    public bool IncludeUsage { get; }

    /// <summary>The max_completion_tokens field, or max_tokens when the former is missing.</summary>
    public int? MaxTokens { get; }

    public DateTimeOffset ReceivedAt { get; }

    /// <summary>Status code the fake chose for its reply, or 0 before that or when it aborted without replying.</summary>
    public int StatusCode => Volatile.Read(ref _statusCode);

    /// <summary>True when the client disconnected before the fake finished its reply.</summary>
    public bool Aborted => _aborted;

    /// <summary>Completes when the fake finished, abandoned or aborted its reply to this request.</summary>
    public Task Completion => _completion.Task;

    /// <summary>Content of the last message with role "user", or null when there is none.</summary>
    public string? LastUserMessage => Messages.LastOrDefault(m => m.Role == "user")?.Content;

    public override string ToString() =>
        $"#{Sequence} {Method} {Path} key={(BearerKey is null ? "none" : FakeUpstream.MaskKey(BearerKey))} model={Model} stream={Stream} status={StatusCode}{(Aborted ? " aborted" : "")}";

    internal void SetStatusCode(int statusCode) => Volatile.Write(ref _statusCode, statusCode);

    internal void MarkAborted() => _aborted = true;

    internal void MarkCompleted() => _completion.TrySetResult();

    private static List<RecordedMessage> ParseMessages(JsonObject? json)
    {
        var messages = new List<RecordedMessage>();
        if (json?["messages"] is not JsonArray array)
        {
            return messages;
        }

        foreach (JsonNode? node in array)
        {
            if (node is not JsonObject message)
            {
                continue;
            }

            string role = ReadString(message, "role") ?? "";
            string content = message["content"] switch
            {
                JsonValue value when value.TryGetValue(out string? text) => text,
                JsonArray parts => string.Concat(parts.OfType<JsonObject>().Select(part => ReadString(part, "text") ?? "")),
                _ => "",
            };
            messages.Add(new RecordedMessage(role, content));
        }

        return messages;
    }

    private static string? ReadString(JsonObject? json, string name) =>
        json?[name] is JsonValue value && value.TryGetValue(out string? text) ? text : null;

    private static int? ReadInt(JsonObject? json, string name) =>
        json?[name] is JsonValue value && value.TryGetValue(out int number) ? number : null;
}
