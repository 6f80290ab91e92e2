using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.KeyWorker.Consumers;
using AddOnEvents.KeyWorker.Keys;
using MassTransit;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace AddOnEvents.KeyWorker;

/// <summary>Builds the KeyWorker host; tests call it with their own configuration.</summary>
public static class KeyWorkerApp
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        configure?.Invoke(builder);
        builder.AddAddOnEventsTelemetry("key-worker");
        AddServices(builder.Services, builder.Configuration);
        builder.Services.AddAddOnEventsBus(builder.Configuration, bus =>
            bus.AddConsumer<KeyRegisteredConsumer, KeyRegisteredConsumerDefinition>());
        builder.Services.AddHostedService<UnverifiedKeyRechecker>();

        var app = builder.Build();
        app.MapAddOnEventsHealth();
        app.MapAddOnEventsTelemetry();
        return app;
    }

    /// <summary>Builds a host without the bus, for operator commands such as master key rotation.</summary>
    public static IHost BuildCommandHost(string[] args, Action<HostApplicationBuilder>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder(args);
        configure?.Invoke(builder);
        AddServices(builder.Services, builder.Configuration);
        return builder.Build();
    }

    private static void AddServices(IServiceCollection services, IConfiguration configuration)
    {
        services.TryAddSingleton(TimeProvider.System);
        services.AddMongoStorage(configuration);
        services.AddEnvelopeEncryption(configuration);
        services.AddSealingKey(configuration, privateKey: true);
        services.AddOptions<FingerprintOptions>()
            .Bind(configuration.GetSection(FingerprintOptions.SectionName))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<FingerprintOptions>, FingerprintOptionsValidator>();
        UpstreamClientFactory.AddUpstream(services, configuration);
        services.AddOptions<KeyWorkerOptions>().Bind(configuration.GetSection(KeyWorkerOptions.SectionName)).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<KeyFingerprinter>();
        services.AddSingleton<ProviderKeyChecker>();
        services.AddSingleton<SealingPrivateKey>();
        services.AddSingleton<MasterKeyRotation>();
    }
}
