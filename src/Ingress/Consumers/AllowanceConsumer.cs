using System.Text.Json;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Hubs;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Ingress.Webhooks;
using MassTransit;

namespace AddOnEvents.Ingress.Consumers;

/// <summary>Payload of the client method <c>AllowanceThreshold</c>.</summary>
public sealed record AllowancePayload(long UsedTokens, long MonthlyTokens, int ThresholdPercent, string Period);

/// <summary>
/// Tells the end user's add-on and, when configured, the host's webhook that the user crossed the threshold share
/// of their monthly allowance. Only the instance that routed the prompt gets the event, so the webhook goes once.
/// </summary>
public sealed class AllowanceConsumer(UserConnections connections, AppStore apps, UserRefCipher userRefs, WebhookOutbox outbox,
    WebhookSender webhooks, TimeProvider clock) : IConsumer<AllowanceThresholdCrossed>
{
    public async Task Consume(ConsumeContext<AllowanceThresholdCrossed> context)
    {
        var m = context.Message;
        await connections.SendAsync(m.UserId, "AllowanceThreshold",
            new AllowancePayload(m.UsedTokens, m.MonthlyTokens, m.ThresholdPercent, m.Period), context.CancellationToken);
        var app = await apps.FindCachedAsync(m.AppId, context.CancellationToken);
        string? userId = userRefs.Open(m.AppId, m.SealedUserRef);

        // The secret is only checked here, so an app whose secret does not decrypt stores no delivery. The sender reads it again at each attempt.
        if (app?.WebhookUrl is not null && userId is not null && await apps.FindWebhookSecretAsync(app, context.CancellationToken) is not null)
        {
            string body = JsonSerializer.Serialize(new
            {
                type = "allowance.threshold_crossed",
                id = m.CorrelationId,
                appId = m.AppId,
                userId,
                usedTokens = m.UsedTokens,
                monthlyTokenAllowance = m.MonthlyTokens,
                thresholdPercent = m.ThresholdPercent,
                period = m.Period,
                occurredAt = m.CrossedAt,
            }, JsonSerializerOptions.Web);

            // Stored before the event is acknowledged, so a stop of this instance from here on loses no delivery. The
            // event's user id is the pseudonym, under which erasure deletes the entry.
            if (await outbox.AddAsync(m.CorrelationId, m.AppId, m.UserId, m.CrossedAt.UtcDateTime, body, clock.GetUtcNow().UtcDateTime,
                context.CancellationToken))
            {
                webhooks.Wake();
            }
        }
    }
}
