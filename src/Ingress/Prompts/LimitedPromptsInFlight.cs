namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// The prompts this instance accepted for users whose usage a quota or allowance limits, and that have no final
/// result yet. Quotas are checked when a prompt is admitted, so every prompt already running can still push a user
/// past the limit. A small cap on them bounds that overshoot.
/// </summary>
public sealed class LimitedPromptsInFlight(TimeProvider clock)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, List<(Guid RequestId, DateTimeOffset ExpiresAt)>> _byUser = [];
    private readonly Dictionary<Guid, string> _users = [];

    /// <summary>
    /// Counts the prompt as running for the user until its result arrives or it expires. Returns false, and counts
    /// nothing, when the user already has <paramref name="max"/> running here.
    /// </summary>
    public bool TryStart(string user, Guid requestId, DateTimeOffset expiresAt, int max)
    {
        var now = clock.GetUtcNow();
        lock (_gate)
        {
            if (!_byUser.TryGetValue(user, out var running))
            {
                running = [];
                _byUser[user] = running;
            }

            // A prompt whose result never came back to this instance stops counting when it expires.
            foreach (var expired in running.Where(entry => entry.ExpiresAt <= now).ToList())
            {
                running.Remove(expired);
                _users.Remove(expired.RequestId);
            }

            if (running.Count >= max)
            {
                return false;
            }

            running.Add((requestId, expiresAt));
            _users[requestId] = user;
            return true;
        }
    }

    /// <summary>Stops counting the prompt. A request id that is not counted here is ignored.</summary>
    public void Finish(Guid requestId)
    {
        lock (_gate)
        {
            if (!_users.Remove(requestId, out string? user) || !_byUser.TryGetValue(user, out var running))
            {
                return;
            }

            running.RemoveAll(entry => entry.RequestId == requestId);
            if (running.Count == 0)
            {
                _byUser.Remove(user);
            }
        }
    }
}
