using System.Collections.Concurrent;
using System.Security.Cryptography;

namespace AddOnEvents.Drill;

/// <summary>Key registrations sent during the drill and whether each accepted one was stored.</summary>
public sealed record KeyFigures(
    int Accepted, int Stored, int NotStored, IReadOnlyDictionary<string, int> Rejected, TimeSpan SlowestStore);

/// <summary>
/// Replaces the app's OpenAI key at a fixed interval, as a developer would from the console. After each accepted
/// replacement it polls the key's status until KeyWorker has checked and stored that version, so every accepted
/// registration is either seen stored or counted as not stored.
/// </summary>
public sealed class KeyTraffic(DrillApi api, DrillApp app)
{
    private static readonly TimeSpan StoreTimeout = TimeSpan.FromSeconds(60);
    private readonly ConcurrentDictionary<string, int> _rejected = new();
    private int _accepted;
    private int _stored;
    private int _notStored;
    private TimeSpan _slowest;

    public int Accepted => Volatile.Read(ref _accepted);

    public int Stored => Volatile.Read(ref _stored);

    /// <summary>Registers a key and waits until it is active; the drill starts only after this worked once.</summary>
    public async Task RegisterFirstAsync(CancellationToken cancellationToken)
    {
        var answer = await api.RegisterKeyAsync(app, NewKey(), cancellationToken);
        if (answer.Status != 202)
        {
            throw new InvalidOperationException($"PUT /api/apps/{{appId}}/openai-key returned {answer.Label}; expected 202.");
        }

        long version = answer.Body.GetProperty("version").GetInt64();
        if (await WaitStoredAsync(version, cancellationToken) is null)
        {
            throw new InvalidOperationException($"The first key did not become active within {StoreTimeout.TotalSeconds} s; see KeyWorker.log.");
        }
    }

    public async Task RunAsync(Ledger ledger, DrillSettings settings, CancellationToken cancellationToken)
    {
        while (ledger.Now < settings.SendDuration && !cancellationToken.IsCancellationRequested)
        {
            var slot = ledger.Now;
            var answer = await api.RegisterKeyAsync(app, NewKey(), cancellationToken);
            if (answer.Status == 202)
            {
                Interlocked.Increment(ref _accepted);
                long version = answer.Body.GetProperty("version").GetInt64();
                var took = await WaitStoredAsync(version, cancellationToken);
                if (took is { } duration)
                {
                    Interlocked.Increment(ref _stored);
                    lock (_rejected)
                    {
                        _slowest = duration > _slowest ? duration : _slowest;
                    }
                }
                else
                {
                    Interlocked.Increment(ref _notStored);
                    DrillLog.Write($"key version {version} was accepted but not stored within {StoreTimeout.TotalSeconds} s");
                }
            }
            else
            {
                _rejected.AddOrUpdate(answer.Label, 1, (_, count) => count + 1);
            }

            var wait = slot + settings.KeyInterval - ledger.Now;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait, cancellationToken);
            }
        }
    }

    public KeyFigures Figures() => new(Accepted, Stored, Volatile.Read(ref _notStored), new Dictionary<string, int>(_rejected), _slowest);

    /// <summary>
    /// Polls the key's status until the version that prompts use is <paramref name="version"/> or newer and active.
    /// Returns how long that took, or null after the timeout. Failed polls (a 503 while the database is away) are retried.
    /// </summary>
    private async Task<TimeSpan?> WaitStoredAsync(long version, CancellationToken cancellationToken)
    {
        var started = DateTime.UtcNow;
        while (DateTime.UtcNow - started < StoreTimeout)
        {
            var status = await api.GetKeyAsync(app, cancellationToken);
            if (status.Status == 200
                && status.Body.TryGetProperty("activeVersion", out var active) && active.ValueKind == System.Text.Json.JsonValueKind.Number
                && active.GetInt64() >= version
                && status.Body.GetProperty("state").GetString() == "active")
            {
                return DateTime.UtcNow - started;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(200), cancellationToken);
        }

        return null;
    }

    /// <summary>A new key for every registration, so each one is a real replacement; the fake upstream accepts any key.</summary>
    private static string NewKey() => "sk-drill-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
}
