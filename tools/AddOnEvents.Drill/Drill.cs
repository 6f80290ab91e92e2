using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http.Connections;
using Microsoft.AspNetCore.SignalR.Client;

namespace AddOnEvents.Drill;

/// <summary>Payload of the hub's PromptCompleted; other fields are ignored.</summary>
public sealed record CompletedPayload(Guid RequestId, string Text);

/// <summary>Payload of the hub's PromptFailed.</summary>
public sealed record FailedPayload(Guid RequestId, string Code, string Message);

/// <summary>
/// Creates an app with a key and connects the users. Then it sends prompts open-loop and replaces the key at intervals
/// while the fault schedule runs. Afterwards it waits for the last results and counts how often each one arrived.
/// </summary>
public sealed class Drill(DrillSettings settings)
{
    /// <summary>Maximum prompts waiting for Ingress's response at once; beyond it the client itself is the bottleneck.</summary>
    private const int MaxInFlight = 1024;

    private readonly Ledger _ledger = new();
    private int _disconnects;

    public async Task<DrillOutcome> RunAsync(CancellationToken cancellationToken)
    {
        using var api = new DrillApi(settings.Ingress, settings.AdminToken);
        var app = await api.CreateAppAsync(cancellationToken);
        var keys = new KeyTraffic(api, app);
        await keys.RegisterFirstAsync(cancellationToken);
        await api.ActivateAddonAsync(app, cancellationToken);
        string[] tokens = await Task.WhenAll(Enumerable.Range(0, settings.Users)
            .Select(user => api.IssueTokenAsync(app, $"drill-user-{user}", cancellationToken)));
        var connections = await ConnectAsync(tokens, cancellationToken);
        DrillLog.Write($"app {app.AppId} has an active key; {settings.Users} users connected; sending for "
            + $"{settings.SendDuration.TotalSeconds:F0} s");

        try
        {
            var faults = new FaultRunner(settings, _ledger);
            var faultTask = faults.RunAsync(cancellationToken);
            var keyTask = keys.RunAsync(_ledger, settings, cancellationToken);
            using var background = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var progressTask = ReportProgressAsync(keys, background.Token);
            var lastGet = new ConcurrentDictionary<Guid, string>();
            var fetchTask = FetchMissedPushesAsync(api, tokens, lastGet, background.Token);
            await SendPromptsAsync(api, tokens, cancellationToken);
            await keyTask;
            await faultTask;
            await DrainAsync(cancellationToken);
            await background.CancelAsync();
            await Task.WhenAll(progressTask, fetchTask);
            return Reconcile(faults.Runs, keys.Figures(), lastGet);
        }
        finally
        {
            await Task.WhenAll(connections.Select(c => c.DisposeAsync().AsTask()));
        }
    }

    private async Task<HubConnection[]> ConnectAsync(string[] tokens, CancellationToken cancellationToken)
    {
        var hub = new Uri(settings.Ingress, "hubs/addon");
        var connections = new HubConnection[tokens.Length];
        for (int user = 0; user < tokens.Length; user++)
        {
            int owner = user;
            string token = tokens[user];
            var connection = new HubConnectionBuilder()
                .WithUrl(hub, options =>
                {
                    options.Transports = HttpTransportType.WebSockets;
                    options.SkipNegotiation = true;
                    options.AccessTokenProvider = () => Task.FromResult<string?>(token);
                })
                .WithAutomaticReconnect()
                .Build();
            connection.On<CompletedPayload>("PromptCompleted", p => _ledger.Push(p.RequestId, owner, "completed", p.Text));
            connection.On<FailedPayload>("PromptFailed", p => _ledger.Push(p.RequestId, owner, "failed: " + p.Code, null));
            connection.On("PromptPiece", (System.Text.Json.JsonElement _) => { });
            connection.Reconnecting += _ =>
            {
                Interlocked.Increment(ref _disconnects);
                return Task.CompletedTask;
            };
            await connection.StartAsync(cancellationToken);
            connections[user] = connection;
        }

        return connections;
    }

    private async Task SendPromptsAsync(DrillApi api, string[] tokens, CancellationToken cancellationToken)
    {
        using var gate = new SemaphoreSlim(MaxInFlight);
        var pending = new ConcurrentDictionary<long, Task>();
        for (long sequence = 0; ; sequence++)
        {
            var due = TimeSpan.FromSeconds(sequence / settings.Rate);
            if (due >= settings.SendDuration)
            {
                break;
            }

            var wait = due - _ledger.Now;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, cancellationToken);
            }

            int user = (int)(sequence % tokens.Length);
            var prompt = _ledger.Send(sequence, user);
            if (!gate.Wait(0, CancellationToken.None))
            {
                prompt.Answer = "not sent: client backlog";
                continue;
            }

            long key = sequence;
            pending[key] = Task.Run(async () =>
            {
                try
                {
                    var answer = await api.SubmitPromptAsync(tokens[user], Ledger.PromptText(user, key), settings.Stream, cancellationToken);
                    if (answer.Status == 202)
                    {
                        prompt.RequestId = answer.Body.GetProperty("requestId").GetGuid();
                    }

                    prompt.Answer = answer.Label;
                }
                finally
                {
                    gate.Release();
                    pending.TryRemove(key, out _);
                }
            }, CancellationToken.None);
        }

        await Task.WhenAll(pending.Values);
    }

    /// <summary>
    /// Asks GET /api/prompts/{id} for accepted prompts whose push has not come within a few seconds, as an add-on
    /// that missed a push would, until cancelled. Records the final results it finds and the last status per id.
    /// </summary>
    private async Task FetchMissedPushesAsync(DrillApi api, string[] tokens, ConcurrentDictionary<Guid, string> lastGet, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);
                var due = _ledger.Unanswered().Where(p => _ledger.Now - p.SentAt > TimeSpan.FromSeconds(5)).ToList();
                await Parallel.ForEachAsync(due, new ParallelOptions { MaxDegreeOfParallelism = 16, CancellationToken = cancellationToken },
                    async (prompt, token) =>
                    {
                        var id = prompt.RequestId!.Value;
                        var answer = await api.GetPromptAsync(tokens[prompt.User], id, token);
                        string status = answer.Status == 200 ? answer.Body.GetProperty("status").GetString() ?? "" : answer.Label;
                        lastGet[id] = status;
                        if (status == "completed")
                        {
                            _ledger.Fetched(id, "completed");
                        }
                        else if (status == "failed")
                        {
                            _ledger.Fetched(id, "failed: " + answer.Body.GetProperty("code").GetString());
                        }
                    });
            }
        }
        catch (OperationCanceledException)
        {
            // The drill has ended.
        }
    }

    /// <summary>Waits until every accepted prompt has a final result, or the drain time is over.</summary>
    private async Task DrainAsync(CancellationToken cancellationToken)
    {
        var deadline = _ledger.Now + settings.Drain;
        while (_ledger.Unanswered().Count > 0 && _ledger.Now < deadline)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);
        }

        DrillLog.Write($"drain ended with {_ledger.Unanswered().Count} accepted prompts without a final result");
    }

    private async Task ReportProgressAsync(KeyTraffic keys, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                await Task.Delay(TimeSpan.FromSeconds(10), cancellationToken);
                var sent = _ledger.Sent();
                var results = _ledger.Results();
                DrillLog.Write($"t={_ledger.Now.TotalSeconds:F0}s sent {sent.Count}, accepted {sent.Count(p => p.RequestId is not null)}, "
                    + $"rejected {sent.Count(p => p.Answer.Length > 0 && p.RequestId is null)}, results {results.Count}, "
                    + $"key registrations {keys.Stored}/{keys.Accepted} stored");
            }
        }
        catch (OperationCanceledException)
        {
            // The drill has ended.
        }
    }

    private DrillOutcome Reconcile(IReadOnlyList<FaultRun> faults, KeyFigures keys, ConcurrentDictionary<Guid, string> lastGet)
    {
        var sent = _ledger.Sent();
        var results = _ledger.Results();
        var accepted = sent.Where(p => p.RequestId is not null).ToList();
        var acceptedIds = accepted.Select(p => p.RequestId!.Value).ToHashSet();
        var outcome = new DrillOutcome
        {
            Sent = sent.Count,
            Accepted = accepted.Count,
            Rejected = Count(sent.Where(p => p.RequestId is null).Select(p => p.Answer.Length == 0 ? "no answer" : p.Answer)),
            Keys = keys,
            Faults = faults,
            Disconnects = Volatile.Read(ref _disconnects),
        };

        foreach (var prompt in accepted)
        {
            var id = prompt.RequestId!.Value;
            var tally = results.GetValueOrDefault(id);
            if (tally is null || (tally.Pushes == 0 && !tally.FetchedWithGet))
            {
                outcome.Lost.Add((prompt, lastGet.GetValueOrDefault(id, "never asked")));
                continue;
            }

            outcome.Finals.Add(tally.Outcome);
            if (tally.Pushes > 1)
            {
                outcome.Duplicated.Add(prompt);
            }

            if (tally.FetchedWithGet)
            {
                outcome.FetchedOnly.Add(prompt);
            }

            if (tally.Misrouted > 0 || (tally.AnsweredSequence is { } answered && answered != prompt.Sequence))
            {
                outcome.Misrouted++;
            }
        }

        outcome.Unsolicited = results.Keys.Count(id => !acceptedIds.Contains(id));
        outcome.Windows = [.. faults.Select((fault, index) => Window(fault, index + 1 < faults.Count ? faults[index + 1].StartedAt : _ledger.Now,
            accepted, sent, results))];
        return outcome;
    }

    /// <summary>What the users saw from the start of a fault until the next one.</summary>
    private static FaultWindow Window(
        FaultRun fault, TimeSpan until, List<SentPrompt> accepted, IReadOnlyList<SentPrompt> sent, IReadOnlyDictionary<Guid, ResultTally> results)
    {
        // Recovered: the first prompt sent after the fault took full effect that the user got a pushed answer for.
        var firstSuccess = accepted
            .Where(p => p.SentAt >= fault.EndedAt && results.GetValueOrDefault(p.RequestId!.Value) is { Pushes: > 0, Outcome: "completed" })
            .Select(p => results[p.RequestId!.Value].FirstPushAt)
            .DefaultIfEmpty(TimeSpan.MaxValue)
            .Min();
        var pushes = results.Values
            .Where(r => r.Pushes > 0 && r.Outcome == "completed" && r.FirstPushAt >= fault.StartedAt && r.FirstPushAt < until)
            .Select(r => r.FirstPushAt)
            .Order()
            .Prepend(fault.StartedAt)
            .Append(until)
            .ToList();
        var gap = TimeSpan.Zero;
        var gapEnd = fault.StartedAt;
        for (int index = 1; index < pushes.Count; index++)
        {
            if (pushes[index] - pushes[index - 1] > gap)
            {
                gap = pushes[index] - pushes[index - 1];
                gapEnd = pushes[index];
            }
        }

        bool InWindow(SentPrompt p) => p.SentAt >= fault.StartedAt && p.SentAt < until;
        return new FaultWindow(
            fault,
            firstSuccess == TimeSpan.MaxValue ? null : firstSuccess - fault.StartedAt,
            gap,
            gapEnd - fault.StartedAt,
            sent.Count(p => InWindow(p) && p.RequestId is null),
            accepted.Count(p => InWindow(p) && results.GetValueOrDefault(p.RequestId!.Value) is { FetchedWithGet: true }));
    }

    private static Dictionary<string, int> Count(IEnumerable<string> labels) =>
        labels.GroupBy(label => label).ToDictionary(group => group.Key, group => group.Count());
}
