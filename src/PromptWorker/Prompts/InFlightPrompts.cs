namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// The prompts this process is answering now, so a user's cancel can abort the upstream request. It also keeps the
/// cancels that arrive before their prompt is registered: a cancel that races the claim finds no record to stop
/// the prompt yet, and Ingress may have failed to record it.
/// </summary>
public sealed class InFlightPrompts(TimeProvider clock)
{
    /// <summary>
    /// Maximum number of remembered cancels for requests not registered here. Past it the oldest are dropped, so a
    /// flood of cancels for unknown request ids takes a bounded amount of memory.
    /// </summary>
    public const int MaxRememberedCancels = 10_000;

    /// <summary>
    /// Time a cancel for an unregistered request is remembered. It equals the default prompt time to live of Ingress,
    /// after which a queued prompt is dropped as expired anyway. The cancel that Ingress records in the result store
    /// lasts the configured time to live.
    /// </summary>
    public static readonly TimeSpan CancelRetention = TimeSpan.FromMinutes(10);

    // One lock covers registrations and remembered cancels, so a cancel that arrives while its prompt registers is
    // either found by Register or finds the registered entry itself.
    private readonly Lock _gate = new();
    private readonly Dictionary<Guid, Entry> _entries = [];
    private readonly Dictionary<CancelKey, LinkedListNode<RememberedCancel>> _remembered = [];
    private readonly LinkedList<RememberedCancel> _rememberedOldestFirst = new();

    /// <summary>Number of cancels remembered for requests not registered here.</summary>
    public int RememberedCancelCount
    {
        get
        {
            lock (_gate)
            {
                return _remembered.Count;
            }
        }
    }

    /// <summary>
    /// Registers a prompt. The returned token is cancelled when its user cancels or the delivery ends. It is
    /// cancelled already, with <see cref="Registration.CancelledByUser"/> set, when the user's cancel came earlier.
    /// </summary>
    public Registration Register(Guid requestId, string appId, string userId, CancellationToken deliveryToken)
    {
        var source = CancellationTokenSource.CreateLinkedTokenSource(deliveryToken);
        var entry = new Entry(appId, userId, source);
        lock (_gate)
        {
            _entries[requestId] = entry;
            RemoveExpiredCancels();

            // The remembered cancel stays, so a redelivery of the same prompt to this process is cancelled too.
            if (_remembered.ContainsKey(new CancelKey(requestId, appId, userId)))
            {
                entry.CancelledByUser = true;
                source.Cancel();
            }
        }

        return new Registration(this, requestId, entry);
    }

    /// <summary>
    /// Cancels the prompt if this process runs it and it belongs to that app and user. A cancel for a request that
    /// is not registered here is remembered for <see cref="CancelRetention"/>, so the prompt registers cancelled.
    /// </summary>
    public bool TryCancel(Guid requestId, string appId, string userId)
    {
        lock (_gate)
        {
            if (_entries.TryGetValue(requestId, out var entry))
            {
                if (entry.AppId != appId || entry.UserId != userId)
                {
                    return false;
                }

                // Cancelling under the lock keeps Registration.Dispose from disposing the source in between.
                entry.CancelledByUser = true;
                entry.Source.Cancel();
                return true;
            }

            RememberCancel(new CancelKey(requestId, appId, userId));
            return false;
        }
    }

    private void RememberCancel(CancelKey key)
    {
        long now = clock.GetTimestamp();
        if (_remembered.Remove(key, out var existing))
        {
            _rememberedOldestFirst.Remove(existing);
        }

        _remembered[key] = _rememberedOldestFirst.AddLast(new RememberedCancel(key, now));
        RemoveExpiredCancels();
        while (_remembered.Count > MaxRememberedCancels)
        {
            RemoveOldestCancel();
        }
    }

    private void RemoveExpiredCancels()
    {
        while (_rememberedOldestFirst.First is { } oldest && clock.GetElapsedTime(oldest.Value.RememberedAt) >= CancelRetention)
        {
            RemoveOldestCancel();
        }
    }

    private void RemoveOldestCancel()
    {
        var oldest = _rememberedOldestFirst.First!;
        _rememberedOldestFirst.RemoveFirst();
        _remembered.Remove(oldest.Value.Key);
    }

    private readonly record struct CancelKey(Guid RequestId, string AppId, string UserId);

    private sealed record RememberedCancel(CancelKey Key, long RememberedAt);

    public sealed class Registration(InFlightPrompts owner, Guid requestId, Entry entry) : IDisposable
    {
        public CancellationToken Token => entry.Source.Token;

        public bool CancelledByUser => entry.CancelledByUser;

        public void Dispose()
        {
            lock (owner._gate)
            {
                if (owner._entries.TryGetValue(requestId, out var current) && current == entry)
                {
                    owner._entries.Remove(requestId);
                }
            }

            entry.Source.Dispose();
        }
    }

    public sealed class Entry(string appId, string userId, CancellationTokenSource source)
    {
        public string AppId { get; } = appId;

        public string UserId { get; } = userId;

        public CancellationTokenSource Source { get; } = source;

        private volatile bool _cancelledByUser;

        public bool CancelledByUser
        {
            get => _cancelledByUser;
            set => _cancelledByUser = value;
        }
    }
}
