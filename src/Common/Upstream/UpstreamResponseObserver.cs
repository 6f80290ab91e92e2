using System.Net.Http.Headers;
using System.Text.Json;

namespace AddOnEvents.Common.Upstream;

/// <summary>What the HTTP layer saw of one upstream call, below the SDK: status, Retry-After, body type, refusal.</summary>
public sealed class UpstreamCallInfo
{
    /// <summary>When set, the body is a server-sent event stream and must not be buffered.</summary>
    public bool Streaming { get; init; }

    public int? StatusCode { get; set; }

    public TimeSpan? RetryAfter { get; set; }

    public string? MediaType { get; set; }

    /// <summary>The model declined to answer (a non-empty <c>refusal</c> in the first choice).</summary>
    public bool Refused { get; set; }
}

/// <summary>
/// Records the raw status, Retry-After and refusal of the responses of one call into its
/// <see cref="UpstreamCallInfo"/>, because the SDK drops the header and the refusal field and fails to parse
/// non-JSON error pages. One instance wraps the pooled handler for one call.
/// </summary>
public sealed class UpstreamResponseObserver(UpstreamCallInfo info, TimeProvider clock) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var response = await base.SendAsync(request, cancellationToken);
        info.StatusCode = (int)response.StatusCode;
        info.MediaType = response.Content.Headers.ContentType?.MediaType;
        info.RetryAfter = RetryAfter(response.Headers.RetryAfter, clock.GetUtcNow());
        if (!info.Streaming && response.IsSuccessStatusCode && info.MediaType == "application/json")
        {
            await response.Content.LoadIntoBufferAsync(cancellationToken);
            info.Refused = HasRefusal(await response.Content.ReadAsByteArrayAsync(cancellationToken));
        }

        return response;
    }

    /// <summary>Reads Retry-After in either form it may take: a number of seconds or an HTTP date.</summary>
    public static TimeSpan? RetryAfter(RetryConditionHeaderValue? header, DateTimeOffset now)
    {
        if (header?.Delta is { } delta)
        {
            return delta < TimeSpan.Zero ? TimeSpan.Zero : delta;
        }

        if (header?.Date is { } date)
        {
            var wait = date - now;
            return wait < TimeSpan.Zero ? TimeSpan.Zero : wait;
        }

        return null;
    }

    private static bool HasRefusal(byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("choices", out var choices)
                && choices.ValueKind == JsonValueKind.Array
                && choices.GetArrayLength() > 0
                && choices[0].TryGetProperty("message", out var message)
                && message.ValueKind == JsonValueKind.Object
                && message.TryGetProperty("refusal", out var refusal)
                && refusal.ValueKind == JsonValueKind.String
                && refusal.GetString()!.Length > 0;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
