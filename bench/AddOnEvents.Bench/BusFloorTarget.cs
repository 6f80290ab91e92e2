using System.Collections.Concurrent;
using System.Diagnostics;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Contracts;
using MassTransit;
using RabbitMQ.Client;

namespace AddOnEvents.Bench;

/// <summary>
/// The two broker hops of a prompt and nothing else. A PromptRequested goes through a quorum queue to a consumer
/// that at once publishes a PromptCompleted. The result routing of the services brings that back to a queue of this
/// process. Broker, message types, publisher confirms and queue kinds are the pipeline's; Ingress, the database and
/// the upstream are left out, so the step shows what the broker and MassTransit alone cost at each rate.
/// </summary>
public sealed class BusFloorTarget : ILoadTarget, IAsyncDisposable
{
    private readonly IBusControl _bus;
    private readonly ISendEndpoint _requests;
    private readonly string _routingKey;
    private readonly ConcurrentDictionary<Guid, (LoadStep Step, long Sequence)> _pending = new();

    private BusFloorTarget(IBusControl bus, ISendEndpoint requests, string routingKey)
    {
        _bus = bus;
        _requests = requests;
        _routingKey = routingKey;
    }

    public string Mode => AddOnEvents.Bench.Mode.BusFloor;

    /// <summary>
    /// Starts a bus on the benchmark's broker with the services' prefetch and concurrency. The request queue has the
    /// type <paramref name="queueType"/> names, quorum like PromptWorker's or classic, so the two can be compared.
    /// </summary>
    public static async Task<BusFloorTarget> StartAsync(int amqpPort, ushort concurrency, string queueType, CancellationToken cancellationToken)
    {
        string suffix = Guid.NewGuid().ToString("N")[..8];
        string requestQueue = "bench-bus-floor-requests-" + suffix;
        string routingKey = "bench-bus-floor-" + suffix;
        BusFloorTarget? target = null;
        var bus = Bus.Factory.CreateUsingRabbitMq(rabbit =>
        {
            rabbit.Host("127.0.0.1", (ushort)amqpPort, "/", host =>
            {
                host.Username("guest");
                host.Password("guest");
                host.PublisherConfirmation = true;
            });
            rabbit.PrefetchCount = concurrency;
            rabbit.ConcurrentMessageLimit = concurrency;
            BusSetup.ConfigurePromptResultRouting(rabbit);
            rabbit.ReceiveEndpoint(requestQueue, endpoint =>
            {
                // Sent straight to this queue and never bound to the PromptRequested exchange, so the services'
                // PromptWorker never receives these messages.
                endpoint.ConfigureConsumeTopology = false;
                BusSetup.ConfigureWorkQueue(endpoint, new RabbitMqOptions { WorkQueueType = queueType });
                endpoint.Handler<PromptRequested>(context => context.Publish(new PromptCompleted(
                    context.Message.CorrelationId, context.Message.RequestId, context.Message.AppId, context.Message.UserId,
                    context.Message.ReplyTo, context.Message.Messages[^1].Content, "stop", new TokenUsage(8, 8, 16), DateTimeOffset.UtcNow)));
            });
            rabbit.ReceiveEndpoint("bench-bus-floor-results-" + suffix, endpoint =>
            {
                endpoint.SetQueueArgument("x-expires", (int)TimeSpan.FromMinutes(10).TotalMilliseconds);
                endpoint.SetQueueArgument("x-message-ttl", (int)TimeSpan.FromMinutes(5).TotalMilliseconds);
                endpoint.ConfigureConsumeTopology = false;
                endpoint.Bind<PromptCompleted>(binding =>
                {
                    binding.ExchangeType = ExchangeType.Direct;
                    binding.RoutingKey = routingKey;
                });
                endpoint.Handler<PromptCompleted>(context =>
                {
                    target?.OnCompleted(context.Message.RequestId);
                    return Task.CompletedTask;
                });
            });
        });
        await bus.StartAsync(cancellationToken);
        // Sends go to the queue's own exchange, because a send to the queue's address would declare the queue again
        // without its type argument, which the broker rejects.
        var requests = await bus.GetSendEndpoint(new Uri("exchange:" + requestQueue));
        target = new BusFloorTarget(bus, requests, routingKey);
        return target;
    }

    public void Send(LoadStep load, long sequence, long dueTimestamp)
    {
        load.Begin(sequence, dueTimestamp, Stopwatch.GetTimestamp());
        var requestId = NewId.NextGuid();
        _pending[requestId] = (load, sequence);
        _ = SendAsync(load, sequence, requestId);
    }

    public async ValueTask DisposeAsync() => await _bus.StopAsync();

    private async Task SendAsync(LoadStep load, long sequence, Guid requestId)
    {
        var now = DateTimeOffset.UtcNow;
        var message = new PromptRequested(requestId, requestId, "bench-app", "bench-user", _routingKey, "gpt-4o-mini", 256,
            [new ChatTurn("user", PromptText.For(load.Id, sequence))], now, now.AddMinutes(2), Stream: false);
        try
        {
            await _requests.Send(message);
        }
        catch (Exception ex)
        {
            // Every failure of the load generator's own send counts against the step, named by its type.
            if (_pending.TryRemove(requestId, out _))
            {
                load.Fail(sequence, "send:" + ex.GetType().Name);
            }
        }
    }

    private void OnCompleted(Guid requestId)
    {
        if (_pending.TryRemove(requestId, out var entry))
        {
            entry.Step.Complete(entry.Sequence, upstreamMicroseconds: 0, upstreamReceivedUs: 0);
        }
    }
}
