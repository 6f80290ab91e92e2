using System.Collections.Concurrent;
using System.Threading.Channels;

namespace AddOnEvents.Ingress.Prompts;

/// <summary>
/// Requests whose HTTP caller waits on this instance for the result (the OpenAI-compatible endpoint). The result
/// consumer writes pieces and the final result into the request's channel.
/// </summary>
public sealed class PendingReplies
{
    private readonly ConcurrentDictionary<Guid, Channel<object>> _waiting = new();

    public ChannelReader<object> Register(Guid requestId)
    {
        var channel = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true });
        _waiting[requestId] = channel;
        return channel.Reader;
    }

    public void Remove(Guid requestId) => _waiting.TryRemove(requestId, out _);

    public void Deliver(Guid requestId, object message)
    {
        if (_waiting.TryGetValue(requestId, out var channel))
        {
            channel.Writer.TryWrite(message);
        }
    }
}
