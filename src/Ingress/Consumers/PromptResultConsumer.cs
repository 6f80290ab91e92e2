using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Hubs;
using AddOnEvents.Ingress.Prompts;
using MassTransit;
using Microsoft.Extensions.Caching.Memory;

namespace AddOnEvents.Ingress.Consumers;

/// <summary>
/// Pushes pieces and results that PromptWorker routed to this instance to every connection of the user who asked,
/// and to an HTTP caller waiting on this instance. Delivery is partitioned by request id, so one answer's messages
/// go out one at a time while different answers go out in parallel. That does not keep their order: the broker
/// consumer hands messages over from several threads, so readers put pieces in order by their sequence number.
/// </summary>
public sealed class PromptResultConsumer(
    UserConnections connections,
    PendingReplies pending,
    AcceptedPrompts accepted,
    IMemoryCache delivered,
    ILogger<PromptResultConsumer> logger)
    : IConsumer<PromptPiece>, IConsumer<PromptCompleted>, IConsumer<PromptFailed>
{
    // The broker delivers at least once, so a final result can arrive twice (a lost confirm or acknowledgement).
    // Every result of a request comes to this one instance, so remembering the delivered ones here is enough.
    private static readonly TimeSpan RememberFor = TimeSpan.FromMinutes(15);

    public async Task Consume(ConsumeContext<PromptPiece> context)
    {
        var m = context.Message;
        if (delivered.TryGetValue(Key(m.RequestId), out _))
        {
            return;
        }

        pending.Deliver(m.RequestId, m);
        await PushAsync(m.UserId, "PromptPiece", new PiecePayload(m.RequestId, m.Sequence, m.Text, m.Attempt), context.CancellationToken);
    }

    public async Task Consume(ConsumeContext<PromptCompleted> context)
    {
        var m = context.Message;
        if (!FirstFinal(m.RequestId))
        {
            return;
        }

        pending.Deliver(m.RequestId, m);
        var usage = new UsagePayload(m.Usage.PromptTokens, m.Usage.CompletionTokens, m.Usage.TotalTokens);
        await PushAsync(m.UserId, "PromptCompleted", new AnswerPayload(m.RequestId, m.Text, m.FinishReason, usage), context.CancellationToken);
        Log.ResultDelivered(logger, "answer", m.RequestId);
    }

    public async Task Consume(ConsumeContext<PromptFailed> context)
    {
        var m = context.Message;
        if (!FirstFinal(m.RequestId))
        {
            return;
        }

        pending.Deliver(m.RequestId, m);
        await PushAsync(m.UserId, "PromptFailed", new FailurePayload(m.RequestId, m.Code, m.Message, m.RetryAfterSeconds),
            context.CancellationToken);
        Log.ResultDelivered(logger, "failure", m.RequestId);
    }

    private Task PushAsync(string userId, string method, object payload, CancellationToken cancellationToken) =>
        connections.SendAsync(userId, method, payload, cancellationToken);

    /// <summary>Records the request as finished; false when a final result for it was already delivered.</summary>
    private bool FirstFinal(Guid requestId)
    {
        if (delivered.TryGetValue(Key(requestId), out _))
        {
            Log.DuplicateResultDropped(logger, requestId);
            return false;
        }

        delivered.Set(Key(requestId), true, RememberFor);
        accepted.Remove(requestId);
        return true;
    }

    private static string Key(Guid requestId) => "delivered:" + requestId.ToString("N");
}
