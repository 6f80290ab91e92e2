using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;

namespace AddOnEvents.Bench;

/// <summary>Payload of the hub's PromptCompleted; other fields are ignored.</summary>
public sealed record CompletedPayload(Guid RequestId, string Text);

/// <summary>Payload of the hub's PromptFailed.</summary>
public sealed record FailedPayload(Guid RequestId, string Code, string Message);

/// <summary>Payload of the hub's PromptPiece, a part of a streamed answer.</summary>
public sealed record PiecePayload(Guid RequestId, int Sequence, string Text);

/// <summary>Argument of the hub method SendPrompt. Without "stream" the hub streams (its default).</summary>
public sealed record PromptArgument(string Prompt, bool Stream);

/// <summary>
/// Simulated end users, each with its own SignalR connection over WebSockets to the add-on hub. Prompts go to the
/// users in turn; answers are matched by the step and sequence number that the echoed text carries.
/// </summary>
public sealed class SignalRTarget : ILoadTarget, IAsyncDisposable
{
    private readonly HubConnection[] _connections;
    private readonly ConcurrentDictionary<int, LoadStep> _steps = new();

    private SignalRTarget(HubConnection[] connections)
    {
        _connections = connections;
        foreach (var connection in connections)
        {
            connection.On<CompletedPayload>("PromptCompleted", OnCompleted);
            connection.On<FailedPayload>("PromptFailed", OnFailed);
            connection.On<PiecePayload>("PromptPiece", OnPiece);
        }
    }

    public string Mode => AddOnEvents.Bench.Mode.SignalR;

    public int Count => _connections.Length;

    private long _lateAnswers;

    /// <summary>Answers that arrived after their step ended, or that no step claims.</summary>
    public long LateAnswers => Interlocked.Read(ref _lateAnswers);

    /// <summary>Opens one connection per token, <paramref name="parallel"/> at a time.</summary>
    public static async Task<SignalRTarget> ConnectAsync(Uri hub, IReadOnlyList<string> tokens, int parallel, CancellationToken cancellationToken)
    {
        var connections = await HubConnections.OpenAsync(hub, tokens, parallel, cancellationToken);
        return new SignalRTarget(connections);
    }

    public void Attach(LoadStep step) => _steps[step.Id] = step;

    public void Detach(LoadStep step) => _steps.TryRemove(step.Id, out _);

    public void Send(LoadStep load, long sequence, long dueTimestamp)
    {
        var connection = _connections[sequence % _connections.Length];
        load.Begin(sequence, dueTimestamp, Stopwatch.GetTimestamp());
        _ = InvokeAsync(connection, load, sequence);
    }

    public async ValueTask DisposeAsync() => await HubConnections.CloseAsync(_connections, 64);

    private static async Task InvokeAsync(HubConnection connection, LoadStep step, long sequence)
    {
        try
        {
            var requestId = await connection.InvokeAsync<Guid>("SendPrompt", new PromptArgument(PromptText.For(step.Id, sequence), step.Stream));
            step.Accepted(sequence, requestId);
        }
        catch (HubException ex)
        {
            // The hub's message starts with the stable code: "code: text".
            int colon = ex.Message.IndexOf(':', StringComparison.Ordinal);
            string message = ex.Message.Replace("An unexpected error occurred invoking 'SendPrompt' on the server. ", "", StringComparison.Ordinal);
            step.Fail(sequence, "hub:" + (colon > 0 ? ex.Message[..colon].Split(' ')[^1] : message));
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException or OperationCanceledException)
        {
            step.Fail(sequence, ex.GetType().Name);
        }
    }

    private void OnCompleted(CompletedPayload payload)
    {
        if (!PromptText.TryParse(payload.Text, out int stepId, out long sequence) || !_steps.TryGetValue(stepId, out var step))
        {
            Interlocked.Increment(ref _lateAnswers);
            return;
        }

        if (TimingMarker.TryFind(payload.Text, out long rx, out long us))
        {
            step.Complete(sequence, us, rx);
        }
        else
        {
            step.Fail(sequence, "no_timing_marker");
        }
    }

    private void OnPiece(PiecePayload payload)
    {
        long now = Stopwatch.GetTimestamp();
        foreach (var step in _steps.Values)
        {
            step.Piece(payload.RequestId, now);
        }
    }

    private void OnFailed(FailedPayload payload)
    {
        foreach (var step in _steps.Values)
        {
            step.FailByRequestId(payload.RequestId, "failed:" + payload.Code);
        }
    }
}

/// <summary>Opens and closes many hub connections with bounded parallelism.</summary>
public static class HubConnections
{
    public static async Task<HubConnection[]> OpenAsync(Uri hub, IReadOnlyList<string> tokens, int parallel, CancellationToken cancellationToken)
    {
        var connections = new HubConnection[tokens.Count];
        using var gate = new SemaphoreSlim(parallel);
        var tasks = new List<Task>(tokens.Count);
        for (int index = 0; index < tokens.Count; index++)
        {
            int slot = index;
            string token = tokens[index];
            await gate.WaitAsync(cancellationToken);
            tasks.Add(Task.Run(async () =>
            {
                try
                {
                    var connection = new HubConnectionBuilder()
                        .WithUrl(hub, options =>
                        {
                            options.Transports = HttpTransportType.WebSockets;
                            options.SkipNegotiation = true;
                            options.AccessTokenProvider = () => Task.FromResult<string?>(token);
                        })
                        .Build();
                    await connection.StartAsync(cancellationToken);
                    connections[slot] = connection;
                }
                finally
                {
                    gate.Release();
                }
            }, cancellationToken));
        }

        await Task.WhenAll(tasks);
        return connections;
    }

    public static async Task CloseAsync(IReadOnlyList<HubConnection?> connections, int parallel)
    {
        using var gate = new SemaphoreSlim(parallel);
        await Task.WhenAll(connections.Where(c => c is not null).Select(async connection =>
        {
            await gate.WaitAsync();
            try
            {
                await connection!.DisposeAsync();
            }
            finally
            {
                gate.Release();
            }
        }));
    }
}
