using Microsoft.Extensions.Caching.Memory;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// The prompts this instance published and has no final result for yet, with their owner. PromptWorker stores a
/// record only when it takes the prompt, so without this a prompt still waiting in the queue (behind others, or
/// while the workers reconnect to the broker) would look unknown to its own user.
/// </summary>
public sealed class AcceptedPrompts(IMemoryCache cache)
{
    public void Add(Guid requestId, string appId, string pseudonym, DateTimeOffset expiresAt) =>
        cache.Set(Key(requestId), Owner(appId, pseudonym), expiresAt);

    public void Remove(Guid requestId) => cache.Remove(Key(requestId));

    /// <summary>Returns whether this instance accepted the prompt for this app and user and has no final result yet.</summary>
    public bool IsWaiting(Guid requestId, string? appId, string? pseudonym) =>
        appId is not null && pseudonym is not null
        && cache.TryGetValue(Key(requestId), out string? owner) && owner == Owner(appId, pseudonym);

    private static string Key(Guid requestId) => "accepted:" + requestId.ToString("N");

    private static string Owner(string appId, string pseudonym) => appId + "|" + pseudonym;
}
