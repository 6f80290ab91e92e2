using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.PromptWorker.Consumers;
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

        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddMongoStorage(builder.Configuration);
        builder.Services.AddEnvelopeEncryption(builder.Configuration);
        UpstreamClientFactory.AddUpstream(builder.Services, builder.Configuration);
        builder.Services.AddSingleton<ChatCompletionCaller>();
        builder.Services.AddAddOnEventsBus(builder.Configuration, bus =>
            bus.AddConsumer<PromptRequestedConsumer, PromptRequestedConsumerDefinition>());

        var app = builder.Build();
        app.MapAddOnEventsHealth();
        return app;
    }
}
