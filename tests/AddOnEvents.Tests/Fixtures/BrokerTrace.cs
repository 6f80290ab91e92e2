using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using RabbitMQ.Client;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>One message body and its headers as the broker saw them, published or delivered.</summary>
public sealed record TracedMessage(string Source, string Headers, string Body);

/// <summary>
/// A virtual host of its own for one test fixture, so fixtures running side by side never consume each other's
/// messages. Captures every message the broker handles there through RabbitMQ's firehose tracer (publishes and
/// deliveries, error and skipped queues included), and reads whatever still sits in any queue through the
/// management API.
/// </summary>
public sealed class BrokerTrace : IAsyncDisposable
{
    private readonly string _queue = "test-trace-" + Guid.NewGuid().ToString("N");
    private readonly HttpClient _management;
    private IConnection? _connection;
    private IChannel? _channel;

    private BrokerTrace()
    {
        _management = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{TestEnvironment.RabbitMqManagementPort}/") };
        _management.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String("guest:guest"u8.ToArray()));
    }

    public string VirtualHost { get; } = "test-" + Guid.NewGuid().ToString("N")[..12];

    private string EscapedVirtualHost => Uri.EscapeDataString(VirtualHost);

    public static async Task<BrokerTrace> StartAsync()
    {
        var trace = new BrokerTrace();
        using (var response = await trace._management.PutAsJsonAsync($"api/vhosts/{trace.EscapedVirtualHost}", new { tracing = true }))
        {
            response.EnsureSuccessStatusCode();
        }

        using (var response = await trace._management.PutAsJsonAsync($"api/permissions/{trace.EscapedVirtualHost}/guest",
            new { configure = ".*", write = ".*", read = ".*" }))
        {
            response.EnsureSuccessStatusCode();
        }

        var factory = new ConnectionFactory
        {
            HostName = "127.0.0.1",
            Port = TestEnvironment.RabbitMqPort,
            UserName = "guest",
            Password = "guest",
            VirtualHost = trace.VirtualHost,
        };
        trace._connection = await factory.CreateConnectionAsync();
        trace._channel = await trace._connection.CreateChannelAsync();
        await trace._channel.QueueDeclareAsync(trace._queue, durable: false, exclusive: true, autoDelete: true);
        await trace._channel.QueueBindAsync(trace._queue, "amq.rabbitmq.trace", "#");
        return trace;
    }

    /// <summary>Returns every traced message since the last call.</summary>
    public async Task<List<TracedMessage>> DrainTraceAsync()
    {
        var messages = new List<TracedMessage>();
        while (await _channel!.BasicGetAsync(_queue, autoAck: true) is { } result)
        {
            string headers = result.BasicProperties.Headers is { } h
                ? string.Join("; ", h.Select(pair => $"{pair.Key}={HeaderText(pair.Value)}"))
                : "";
            messages.Add(new TracedMessage("trace:" + result.RoutingKey, headers, Encoding.UTF8.GetString(result.Body.Span)));
        }

        return messages;
    }

    /// <summary>Peeks at the messages still in every queue of the broker, requeueing them.</summary>
    public async Task<List<TracedMessage>> PeekAllQueuesAsync()
    {
        var messages = new List<TracedMessage>();
        using var queues = JsonDocument.Parse(await _management.GetStringAsync($"api/queues/{EscapedVirtualHost}"));
        foreach (var queue in queues.RootElement.EnumerateArray())
        {
            string name = queue.GetProperty("name").GetString()!;
            if (name == _queue || !queue.TryGetProperty("messages", out var count) || count.GetInt32() == 0)
            {
                continue;
            }

            using var response = await _management.PostAsJsonAsync($"api/queues/{EscapedVirtualHost}/{Uri.EscapeDataString(name)}/get",
                new { count = 10_000, ackmode = "ack_requeue_true", encoding = "auto" });
            messages.Add(new TracedMessage("queue:" + name, "", await response.Content.ReadAsStringAsync()));
        }

        return messages;
    }

    /// <summary>Returns the names and message counts of the broker's queues.</summary>
    public async Task<Dictionary<string, int>> QueueDepthsAsync()
    {
        using var queues = JsonDocument.Parse(await _management.GetStringAsync($"api/queues/{EscapedVirtualHost}"));
        return queues.RootElement.EnumerateArray().ToDictionary(
            q => q.GetProperty("name").GetString()!,
            q => q.TryGetProperty("messages", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt32() : 0);
    }

    /// <summary>Returns each queue's type (classic, quorum or stream) by name.</summary>
    public async Task<Dictionary<string, string>> QueueTypesAsync()
    {
        using var queues = JsonDocument.Parse(await _management.GetStringAsync($"api/queues/{EscapedVirtualHost}"));
        return queues.RootElement.EnumerateArray().ToDictionary(q => q.GetProperty("name").GetString()!, q => q.GetProperty("type").GetString()!);
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

        using (await _management.DeleteAsync($"api/vhosts/{EscapedVirtualHost}"))
        {
        }

        _management.Dispose();
    }

    private static string HeaderText(object? value) => value switch
    {
        byte[] bytes => Encoding.UTF8.GetString(bytes),
        IEnumerable<object> list => "[" + string.Join(",", list.Select(HeaderText)) + "]",
        IDictionary<string, object> table => "{" + string.Join(",", table.Select(p => $"{p.Key}={HeaderText(p.Value)}")) + "}",
        _ => value?.ToString() ?? "",
    };
}
