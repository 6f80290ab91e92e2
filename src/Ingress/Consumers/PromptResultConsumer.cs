using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Hubs;
using MassTransit;
using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Consumers;

/// <summary>Pushes results that PromptWorker routed to this instance to every connection of the user who asked.</summary>
public sealed class PromptResultConsumer(IHubContext<AddOnHub> hub, ILogger<PromptResultConsumer> logger)
    : IConsumer<PromptCompleted>, IConsumer<PromptFailed>
{
    public async Task Consume(ConsumeContext<PromptCompleted> context)
    {
        var m = context.Message;
        var usage = new UsagePayload(m.Usage.PromptTokens, m.Usage.CompletionTokens, m.Usage.TotalTokens);
        await hub.Clients.User(m.UserId).SendAsync("PromptCompleted", new AnswerPayload(m.RequestId, m.Text, m.FinishReason, usage),
            context.CancellationToken);
        Log.ResultDelivered(logger, "answer", m.RequestId);
    }

    public async Task Consume(ConsumeContext<PromptFailed> context)
    {
        var m = context.Message;
        await hub.Clients.User(m.UserId).SendAsync("PromptFailed", new FailurePayload(m.RequestId, m.Code, m.Message, m.RetryAfterSeconds),
            context.CancellationToken);
        Log.ResultDelivered(logger, "failure", m.RequestId);
    }
}
