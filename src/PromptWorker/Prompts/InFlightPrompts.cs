using System.Collections.Concurrent;

namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>The prompts this process is answering now, so a user's cancel can abort the upstream request.</summary>
public sealed class InFlightPrompts
{
    private readonly ConcurrentDictionary<Guid, Entry> _entries = new();

    /// <summary>Registers a prompt; the returned token is cancelled when its user cancels or the delivery ends.</summary>
    public Registration Register(Guid requestId, string appId, string userId, CancellationToken deliveryToken)
    {
        var source = CancellationTokenSource.CreateLinkedTokenSource(deliveryToken);
        var entry = new Entry(appId, userId, source);
        _entries[requestId] = entry;
        return new Registration(this, requestId, entry);
    }

    /// <summary>Cancels the prompt if this process runs it and it belongs to that app and user.</summary>
    public bool TryCancel(Guid requestId, string appId, string userId)
    {
        if (_entries.TryGetValue(requestId, out var entry) && entry.AppId == appId && entry.UserId == userId)
        {
            entry.CancelledByUser = true;
            entry.Source.Cancel();
            return true;
        }

        return false;
    }

    public sealed class Registration(InFlightPrompts owner, Guid requestId, Entry entry) : IDisposable
    {
        public CancellationToken Token => entry.Source.Token;

        public bool CancelledByUser => entry.CancelledByUser;

        public void Dispose()
        {
            owner._entries.TryRemove(new KeyValuePair<Guid, Entry>(requestId, entry));
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
