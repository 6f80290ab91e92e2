using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.PromptWorker.Consumers;
using AddOnEvents.PromptWorker.Prompts;
using AddOnEvents.PromptWorker.Upstream;
using MassTransit;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace AddOnEvents.PromptWorker;

/// <summary>Builds the PromptWorker host; tests call it with their own configuration.</summary>
public static class PromptWorkerApp
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        configure?.Invoke(builder);
        builder.AddAddOnEventsTelemetry("prompt-worker");

        var services = builder.Services;
        services.TryAddSingleton(TimeProvider.System);
        services.AddOptions<PromptWorkerOptions>()
            .Bind(builder.Configuration.GetSection(PromptWorkerOptions.SectionName))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddMongoStorage(builder.Configuration);
        services.AddEnvelopeEncryption(builder.Configuration);
        UpstreamClientFactory.AddUpstream(services, builder.Configuration);
        services.AddSingleton<ChatCompletionCaller>();
        services.AddSingleton<InFlightPrompts>();
        services.AddSingleton<WorkerIdentity>();
        // Hosted services start one after another in the order they are registered, and MassTransit's starts the
        // consumers, so the move that makes earlier builds' documents findable by id is registered before the bus.
        services.AddHostedService<MisplacedDocumentMover>();
        services.AddHostedService<ExpiredDataCleaner>();
        services.AddAddOnEventsBus(
            builder.Configuration,
            bus =>
            {
                bus.AddConsumer<PromptRequestedConsumer, PromptRequestedConsumerDefinition>();
                bus.AddConsumer<PromptCancelledConsumer>().ExcludeFromConfigureEndpoints();
            },
            (context, rabbit) =>
            {
                // Every instance must hear every cancel, so each gets a queue of its own that goes away with it.
                var identity = context.GetRequiredService<WorkerIdentity>();
                rabbit.ReceiveEndpoint("prompt-cancelled-" + identity.Id.ToLowerInvariant(), endpoint =>
                {
                    endpoint.Durable = false;
                    endpoint.AutoDelete = true;
                    endpoint.ConfigureConsumer<PromptCancelledConsumer>(context);
                });
            });

        var app = builder.Build();
        app.MapAddOnEventsHealth();
        app.MapAddOnEventsTelemetry();
        return app;
    }
}
