using System.Text.Json;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Reads the server-sent events of a streamed <c>/v1/chat/completions</c> response.</summary>
public static class ChatChunks
{
    /// <summary>
    /// Joins the <c>delta.content</c> of every chunk in event order. The <c>[DONE]</c> marker, error events and the
    /// usage chunk, which has no choices, add nothing.
    /// </summary>
    /// <param name="payloads">The text after <c>data: </c> of each event.</param>
    public static string JoinedContent(IEnumerable<string> payloads) =>
        string.Concat(payloads
            .Where(payload => payload != "[DONE]")
            .Select(payload => JsonDocument.Parse(payload).RootElement)
            .Where(chunk => chunk.TryGetProperty("choices", out var choices) && choices.GetArrayLength() > 0)
            .Select(chunk => chunk.GetProperty("choices")[0].GetProperty("delta").TryGetProperty("content", out var content)
                ? content.GetString()
                : ""));
}
