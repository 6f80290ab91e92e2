using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text.Json;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace AddOnEvents.Bench;

/// <summary>The RabbitMQ management API of the benchmark's node: queue depths, and purging a backlog after overload.</summary>
public sealed class BrokerAdmin(int managementPort) : IDisposable
{
    private readonly HttpClient _http = new()
    {
        BaseAddress = new Uri($"http://127.0.0.1:{managementPort}/api/"),
        Timeout = TimeSpan.FromSeconds(10),
        DefaultRequestHeaders = { Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("guest:guest"u8.ToArray())) },
    };

    public bool Enabled => managementPort > 0;

    public async Task<IReadOnlyList<(string Vhost, string Name, long Messages)>> QueuesAsync(CancellationToken cancellationToken)
    {
        if (!Enabled)
        {
            return [];
        }

        using var document = JsonDocument.Parse(await _http.GetStringAsync("queues?columns=name,vhost,messages", cancellationToken));
        return document.RootElement.EnumerateArray()
            .Select(q => (q.GetProperty("vhost").GetString()!, q.GetProperty("name").GetString()!,
                q.TryGetProperty("messages", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt64() : 0))
            .ToList();
    }

    /// <summary>
    /// Purges what is queued and waits until no queue holds a message, ready or unacknowledged, so that a backlog
    /// left by an overloaded step does not slow the next one. Returns the messages dropped and whether it settled.
    /// </summary>
    public async Task<(long Dropped, bool Settled)> SettleAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        long dropped = 0;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            dropped += await PurgeAsync(cancellationToken);
            await Task.Delay(1000, cancellationToken);
            if ((await QueuesAsync(cancellationToken)).Sum(q => q.Messages) == 0)
            {
                return (dropped, true);
            }
        }

        return (dropped, false);
    }

    public async Task<IReadOnlyList<string>> ExchangesAsync(CancellationToken cancellationToken)
    {
        using var document = JsonDocument.Parse(await _http.GetStringAsync("exchanges?columns=name", cancellationToken));
        return document.RootElement.EnumerateArray().Select(e => e.GetProperty("name").GetString()!).ToList();
    }

    /// <summary>Empties every queue that holds messages; returns how many messages were dropped.</summary>
    public async Task<long> PurgeAsync(CancellationToken cancellationToken)
    {
        long dropped = 0;
        foreach (var (vhost, name, messages) in await QueuesAsync(cancellationToken))
        {
            if (messages == 0)
            {
                continue;
            }

            using var response = await _http.DeleteAsync($"queues/{Uri.EscapeDataString(vhost)}/{Uri.EscapeDataString(name)}/contents", cancellationToken);
            dropped += response.IsSuccessStatusCode ? messages : 0;
        }

        return dropped;
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>When a message passed the broker: the producer's sentTime and the tap's arrival time, in Unix microseconds.</summary>
public readonly record struct TapTimes(long SentUs, long ArrivedUs);

/// <summary>
/// Binds an exclusive queue of its own to the prompt and result exchanges and notes when each message was sent and
/// when it came through, keyed by request id. It adds a copy of every message, so it runs only in its own phase.
/// </summary>
public sealed class BrokerTap : IAsyncDisposable
{
    private readonly ConcurrentDictionary<Guid, TapTimes> _requested = new();
    private readonly ConcurrentDictionary<Guid, TapTimes> _completed = new();
    private IConnection? _connection;
    private IChannel? _channel;

    public IReadOnlyDictionary<Guid, TapTimes> Requested => _requested;

    public IReadOnlyDictionary<Guid, TapTimes> Completed => _completed;

    public static async Task<BrokerTap> StartAsync(int port, string requestedExchange, string completedExchange, string resultRoutingKey,
        CancellationToken cancellationToken)
    {
        var tap = new BrokerTap();
        var factory = new ConnectionFactory { HostName = "127.0.0.1", Port = port, UserName = "guest", Password = "guest" };
        tap._connection = await factory.CreateConnectionAsync("bench-tap", cancellationToken);
        tap._channel = await tap._connection.CreateChannelAsync(cancellationToken: cancellationToken);
        var queue = await tap._channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true, cancellationToken: cancellationToken);
        await tap._channel.QueueBindAsync(queue.QueueName, requestedExchange, "", cancellationToken: cancellationToken);
        await tap._channel.QueueBindAsync(queue.QueueName, completedExchange, resultRoutingKey, cancellationToken: cancellationToken);
        var consumer = new AsyncEventingBasicConsumer(tap._channel);
        consumer.ReceivedAsync += (_, delivery) =>
        {
            tap.Note(delivery.Body.Span, LoadStep.UnixMicroseconds());
            return Task.CompletedTask;
        };
        await tap._channel.BasicConsumeAsync(queue.QueueName, autoAck: true, consumer, cancellationToken);
        return tap;
    }

    public async ValueTask DisposeAsync()
    {
        if (_channel is not null)
        {
            await _channel.DisposeAsync();
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }

    private void Note(ReadOnlySpan<byte> body, long arrivedUs)
    {
        try
        {
            var reader = new Utf8JsonReader(body);
            using var document = JsonDocument.ParseValue(ref reader);
            var root = document.RootElement;
            string type = root.GetProperty("messageType")[0].GetString() ?? "";
            var sent = root.GetProperty("sentTime").GetDateTime().ToUniversalTime();
            long sentUs = (sent.Ticks - DateTime.UnixEpoch.Ticks) / TimeSpan.TicksPerMicrosecond;
            Guid requestId = root.GetProperty("message").TryGetProperty("requestId", out var id) && id.TryGetGuid(out var parsed)
                ? parsed
                : root.GetProperty("correlationId").GetGuid();
            var target = type.EndsWith(":PromptRequested", StringComparison.Ordinal) ? _requested
                : type.EndsWith(":PromptCompleted", StringComparison.Ordinal) ? _completed
                : null;
            target?.TryAdd(requestId, new TapTimes(sentUs, arrivedUs));
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            // A message of another shape is not part of the breakdown.
        }
    }
}
