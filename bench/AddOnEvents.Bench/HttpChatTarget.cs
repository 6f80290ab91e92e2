using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace AddOnEvents.Bench;

/// <summary>
/// Sends OpenAI-shaped chat completion requests over HTTP/1.1 keep-alive connections: to the fake upstream
/// directly, to Portkey, or to AddOnEvents' /v1/chat/completions. The answer is found by the fake's timing marker.
/// </summary>
public sealed class HttpChatTarget : ILoadTarget, IDisposable
{
    private readonly HttpClient _client;
    private readonly Uri _endpoint;
    private readonly Func<long, string> _bearer;
    private readonly IReadOnlyList<(string Name, string Value)> _headers;

    public HttpChatTarget(string mode, Uri endpoint, Func<long, string> bearer, IReadOnlyList<(string Name, string Value)>? headers = null)
    {
        Mode = mode;
        _endpoint = endpoint;
        _bearer = bearer;
        _headers = headers ?? [];
        _client = new HttpClient(new SocketsHttpHandler
        {
            UseProxy = false,
            AllowAutoRedirect = false,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            MaxConnectionsPerServer = int.MaxValue,
            AutomaticDecompression = DecompressionMethods.None,
        })
        {
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    public string Mode { get; }

    public void Send(LoadStep load, long sequence, long dueTimestamp)
    {
        var pending = load.Begin(sequence, dueTimestamp, Stopwatch.GetTimestamp());
        _ = SendAsync(load, pending.Sequence);
    }

    /// <summary>Sends one request and returns the status and body, for the availability probe of /v1.</summary>
    public async Task<(int Status, string Body)> ProbeAsync(CancellationToken cancellationToken)
    {
        using var request = CreateRequest(PromptText.For(0, 0), stream: false, 0);
        using var response = await _client.SendAsync(request, cancellationToken);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(cancellationToken));
    }

    public void Dispose() => _client.Dispose();

    private async Task SendAsync(LoadStep step, long sequence)
    {
        try
        {
            using var request = CreateRequest(PromptText.For(step.Id, sequence), step.Stream, sequence);
            using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                string body = await response.Content.ReadAsStringAsync();
                step.Fail(sequence, "http_" + ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture) + ErrorCode(body));
                return;
            }

            if (step.Stream)
            {
                await ReadStreamAsync(step, sequence, response);
                return;
            }

            byte[] bytes = await response.Content.ReadAsByteArrayAsync();
            if (TimingMarker.TryFind(bytes, out long rx, out long us))
            {
                step.Complete(sequence, us, rx);
            }
            else
            {
                step.Fail(sequence, "no_timing_marker");
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or TaskCanceledException or OperationCanceledException)
        {
            step.Fail(sequence, ex.GetType().Name);
        }
    }

    private static async Task ReadStreamAsync(LoadStep step, long sequence, HttpResponseMessage response)
    {
        await using var body = await response.Content.ReadAsStreamAsync();
        using var reader = new StreamReader(body, Encoding.UTF8);
        long firstPiece = 0;
        long rx = 0;
        long us = -1;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal))
            {
                continue;
            }

            if (line.AsSpan(6).SequenceEqual("[DONE]"))
            {
                break;
            }

            if (firstPiece == 0 && line.Contains("\"content\":\"", StringComparison.Ordinal) && !line.Contains("\"content\":\"\"", StringComparison.Ordinal))
            {
                firstPiece = Stopwatch.GetTimestamp();
            }

            if (us < 0 && TimingMarker.TryFind(Encoding.UTF8.GetBytes(line), out long foundRx, out long foundUs))
            {
                (rx, us) = (foundRx, foundUs);
            }
        }

        if (us >= 0)
        {
            step.Complete(sequence, us, rx, firstPiece);
        }
        else
        {
            step.Fail(sequence, "no_timing_marker");
        }
    }

    private HttpRequestMessage CreateRequest(string prompt, bool stream, long sequence)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("model", "gpt-4o-mini");
            json.WriteStartArray("messages");
            json.WriteStartObject();
            json.WriteString("role", "user");
            json.WriteString("content", prompt);
            json.WriteEndObject();
            json.WriteEndArray();
            if (stream)
            {
                json.WriteBoolean("stream", true);
            }

            json.WriteEndObject();
        }

        var content = new ByteArrayContent(buffer.WrittenSpan.ToArray());
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var request = new HttpRequestMessage(HttpMethod.Post, _endpoint) { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _bearer(sequence));
        foreach (var (name, value) in _headers)
        {
            request.Headers.TryAddWithoutValidation(name, value);
        }

        return request;
    }

    private static string ErrorCode(string body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            var root = document.RootElement;
            if (root.TryGetProperty("code", out var code) && code.ValueKind == JsonValueKind.String)
            {
                return ":" + code.GetString();
            }

            if (root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object
                && error.TryGetProperty("code", out var inner) && inner.ValueKind == JsonValueKind.String)
            {
                return ":" + inner.GetString();
            }
        }
        catch (JsonException)
        {
            // Not JSON: the status alone names the error.
        }

        return "";
    }
}

/// <summary>Prompts carry the step and the sequence number, so an echoed answer names the prompt it belongs to.</summary>
public static class PromptText
{
    public static string For(int step, long sequence) =>
        string.Create(CultureInfo.InvariantCulture, $"bench s{step} r{sequence} say hello");

    /// <summary>Reads step and sequence back from an echoed answer.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out int step, out long sequence)
    {
        step = 0;
        sequence = 0;
        int at = text.IndexOf("bench s");
        if (at < 0)
        {
            return false;
        }

        var rest = text[(at + 7)..];
        int space = rest.IndexOf(' ');
        if (space < 0 || !int.TryParse(rest[..space], NumberStyles.None, CultureInfo.InvariantCulture, out step))
        {
            return false;
        }

        rest = rest[(space + 1)..];
        if (rest.Length < 2 || rest[0] != 'r')
        {
            return false;
        }

        rest = rest[1..];
        int end = rest.IndexOf(' ');
        return long.TryParse(end < 0 ? rest : rest[..end], NumberStyles.None, CultureInfo.InvariantCulture, out sequence);
    }
}

/// <summary>Finds the fake upstream's " [fake rx=... us=...]" marker in an answer.</summary>
public static class TimingMarker
{
    private static readonly byte[] Prefix = "[fake rx="u8.ToArray();

    public static bool TryFind(ReadOnlySpan<byte> bytes, out long receivedUnixMicroseconds, out long microseconds)
    {
        receivedUnixMicroseconds = 0;
        microseconds = 0;
        int at = bytes.IndexOf(Prefix);
        if (at < 0)
        {
            return false;
        }

        var rest = bytes[(at + Prefix.Length)..];
        int consumed = ReadNumber(rest, out receivedUnixMicroseconds);
        if (consumed == 0 || !rest[consumed..].StartsWith(" us="u8))
        {
            return false;
        }

        return ReadNumber(rest[(consumed + 4)..], out microseconds) > 0;
    }

    public static bool TryFind(string text, out long receivedUnixMicroseconds, out long microseconds) =>
        TryFind(Encoding.UTF8.GetBytes(text), out receivedUnixMicroseconds, out microseconds);

    private static int ReadNumber(ReadOnlySpan<byte> bytes, out long value)
    {
        value = 0;
        int index = 0;
        while (index < bytes.Length && bytes[index] is >= (byte)'0' and <= (byte)'9')
        {
            value = (value * 10) + (bytes[index] - '0');
            index++;
        }

        return index;
    }
}
