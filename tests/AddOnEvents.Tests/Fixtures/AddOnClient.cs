using System.Collections.Concurrent;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>A result pushed to the add-on: <see cref="Kind"/> is PromptCompleted or PromptFailed, <see cref="Json"/> its payload.</summary>
public sealed record AddOnResult(string Kind, Guid RequestId, JsonElement Json)
{
    public string Text => Json.GetProperty("text").GetString()!;

    public string Code => Json.GetProperty("code").GetString()!;

    public string Message => Json.GetProperty("message").GetString()!;
}

/// <summary>An end user's SignalR connection over WebSockets that records every payload it receives.</summary>
public sealed class AddOnClient : IAsyncDisposable
{
    private readonly Channel<AddOnResult> _results = Channel.CreateUnbounded<AddOnResult>();
    private readonly ConcurrentQueue<AddOnResult> _all = new();

    private AddOnClient(HubConnection connection)
    {
        Connection = connection;
        connection.On<JsonElement>("PromptCompleted", payload => Record("PromptCompleted", payload));
        connection.On<JsonElement>("PromptFailed", payload => Record("PromptFailed", payload));
        connection.On<JsonElement>("AllowanceThreshold", payload => _allowanceEvents.Enqueue(payload.Clone()));
        connection.On<JsonElement>("PromptPiece", payload => _pieces.Enqueue(new AddOnResult("PromptPiece", payload.GetProperty("requestId").GetGuid(),
            payload.Clone())));
    }

    private readonly ConcurrentQueue<JsonElement> _allowanceEvents = new();

    /// <summary>Every AllowanceThreshold event received.</summary>
    public IReadOnlyCollection<JsonElement> AllowanceEvents => _allowanceEvents;

    private readonly ConcurrentQueue<AddOnResult> _pieces = new();

    /// <summary>Every streamed piece received, in arrival order.</summary>
    public IReadOnlyCollection<AddOnResult> Pieces => _pieces;

    public HubConnection Connection { get; }

    public IReadOnlyCollection<AddOnResult> Received => _all;

    public static async Task<AddOnClient> ConnectAsync(Uri ingress, string token, HttpCapture? capture = null)
    {
        var client = Create(ingress, token, capture);
        await client.Connection.StartAsync().WaitAsync(TimeSpan.FromSeconds(15));
        return client;
    }

    /// <summary>Builds the client without connecting it.</summary>
    public static AddOnClient Create(Uri ingress, string token, HttpCapture? capture = null)
    {
        var connection = new HubConnectionBuilder()
            .WithUrl(new Uri(ingress, "/hubs/addon"), HttpTransportType.WebSockets, options =>
            {
                options.AccessTokenProvider = () => Task.FromResult<string?>(token);
                if (capture is not null)
                {
                    options.HttpMessageHandlerFactory = inner => capture.CreateHandler(inner);
                    if (capture.ServerCertificateValidation is { } validate)
                    {
                        // The WebSocket has a TLS connection of its own, outside the HTTP handler.
                        options.WebSocketConfiguration = socket => socket.RemoteCertificateValidationCallback = validate;
                    }
                }
            })
            .Build();
        return new AddOnClient(connection);
    }

    /// <summary>Waits for the result of one request; results of other requests stay queued for later calls.</summary>
    public async Task<AddOnResult> WaitForResultAsync(Guid requestId, TimeSpan timeout)
    {
        using var cancellation = new CancellationTokenSource(timeout);
        var skipped = new List<AddOnResult>();
        try
        {
            while (true)
            {
                var result = await _results.Reader.ReadAsync(cancellation.Token);
                if (result.RequestId == requestId)
                {
                    return result;
                }

                skipped.Add(result);
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"No result for request {requestId} within {timeout}; received {_all.Count} results in all.");
        }
        finally
        {
            foreach (var result in skipped)
            {
                _results.Writer.TryWrite(result);
            }
        }
    }

    public async ValueTask DisposeAsync() => await Connection.DisposeAsync();

    private void Record(string kind, JsonElement payload)
    {
        var result = new AddOnResult(kind, payload.GetProperty("requestId").GetGuid(), payload.Clone());
        _all.Enqueue(result);
        _results.Writer.TryWrite(result);
    }
}
