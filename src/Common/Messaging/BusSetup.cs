using System.ComponentModel.DataAnnotations;
using AddOnEvents.Contracts;
using MassTransit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace AddOnEvents.Common.Messaging;

public sealed class RabbitMqOptions
{
    public const string SectionName = "RabbitMq";

    [Required(ErrorMessage = "RabbitMq:Host is missing.")]
    public string Host { get; set; } = "localhost";

    [Range(1, 65535, ErrorMessage = "RabbitMq:Port must be between 1 and 65535.")]
    public ushort Port { get; set; } = 5672;

    public string VirtualHost { get; set; } = "/";

    [Required(ErrorMessage = "RabbitMq:Username is missing.")]
    public string Username { get; set; } = "";

    [Required(ErrorMessage = "RabbitMq:Password is missing.")]
    public string Password { get; set; } = "";

    /// <summary>
    /// Nodes of a RabbitMQ cluster, "host:port" or "host" (then <see cref="Port"/>), as one comma-separated value or
    /// an array. When set, the services connect to these nodes in turn instead of <see cref="Host"/>.
    /// </summary>
    public IReadOnlyList<string> ClusterNodes { get; set; } = [];

    /// <summary>Messages a consumer fetches ahead; bounds memory and lets several instances share the work.</summary>
    [Range(1, 1000)]
    public ushort PrefetchCount { get; set; } = 32;

    /// <summary>Messages one instance handles at once.</summary>
    [Range(1, 1000)]
    public int ConcurrentMessageLimit { get; set; } = 32;

    /// <summary>
    /// Type of the work queues that PromptWorker and KeyWorker consume. A "quorum" queue is replicated on the nodes
    /// of a cluster. A "classic" queue stays on one node, costs the broker less CPU per message and delivers sooner.
    /// RabbitMQ rejects a declare with another type than the existing queue's, so a change needs the drained queue
    /// deleted first.
    /// </summary>
    public string WorkQueueType { get; set; } = QuorumQueueType;

    public const string QuorumQueueType = "quorum";

    public const string ClassicQueueType = "classic";

    /// <summary>Connects over TLS (AMQPS, usually port 5671) and verifies the broker's certificate.</summary>
    public bool UseTls { get; set; }

    /// <summary>PEM or DER file of the CA that signed the broker's certificate; only it is trusted. Unset: the machine's trust store.</summary>
    public string? CaCertificatePath { get; set; }

    /// <summary>Host name the broker's certificate must be issued for; defaults to <see cref="Host"/>.</summary>
    public string? ServerName { get; set; }

    /// <summary>Client certificate sent to the broker: a PKCS#12 file, or a PEM certificate when <see cref="ClientKeyPath"/> is set.</summary>
    public string? ClientCertificatePath { get; set; }

    /// <summary>Password of the PKCS#12 file in <see cref="ClientCertificatePath"/>.</summary>
    public string? ClientCertificatePassword { get; set; }

    /// <summary>PEM private key of a PEM client certificate.</summary>
    public string? ClientKeyPath { get; set; }

    /// <summary>Accepts any broker certificate. Allowed only in the Development environment, where it logs a warning.</summary>
    public bool AllowInvalidCertificates { get; set; }
}

public static class BusSetup
{
    /// <summary>
    /// Registers MassTransit on RabbitMQ with publisher confirms. The host waits until the bus has bound its
    /// queues, because publishes made before that are confirmed by the broker and then dropped.
    /// </summary>
    public static IServiceCollection AddAddOnEventsBus(
        this IServiceCollection services,
        IConfiguration configuration,
        Action<IBusRegistrationConfigurator> registerConsumers,
        Action<IBusRegistrationContext, IRabbitMqBusFactoryConfigurator>? configureBus = null)
    {
        services.AddOptions<RabbitMqOptions>()
            .Bind(configuration.GetSection(RabbitMqOptions.SectionName))
            .ValidateDataAnnotations()
            .PostConfigure(options => options.ClusterNodes = BrokerCluster.SplitNodeList(
                options.ClusterNodes, configuration[$"{RabbitMqOptions.SectionName}:{nameof(RabbitMqOptions.ClusterNodes)}"]))
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<RabbitMqOptions>, RabbitMqTlsValidator>();
        services.AddSingleton<IValidateOptions<RabbitMqOptions>, BrokerClusterValidator>();
        services.AddSingleton<IValidateOptions<RabbitMqOptions>, WorkQueueTypeValidator>();
        services.AddOptions<MassTransitHostOptions>().Configure(options =>
        {
            options.WaitUntilStarted = true;
            options.StartTimeout = TimeSpan.FromSeconds(60);
            options.StopTimeout = TimeSpan.FromSeconds(30);
        });

        services.AddMassTransit(bus =>
        {
            bus.SetKebabCaseEndpointNameFormatter();
            // MassTransit reports the bus's configuration (host, queues, consumers) to its vendor by default. A
            // service that stores other people's keys sends nothing to third parties that its operator did not choose.
            bus.DisableUsageTelemetry();
            registerConsumers(bus);
            // NOTE: MassTransit 8.5.12 (ReceiveTransport, RabbitMqHostConfiguration) restarts each receive endpoint after
            // a lost connection on a schedule that no setting changes. Each attempt waits 1 s plus a delay that grows from
            // about 6 s to 30 s over four failed attempts, with 25% jitter. A reconnect does not reset it, so consumers can
            // resume up to about 40 s after the broker is back. Restarts of a local node that was down for about 8 s
            // measured 0-14 s per endpoint.
            bus.UsingRabbitMq((context, rabbit) =>
            {
                var options = context.GetRequiredService<IOptions<RabbitMqOptions>>().Value;
                rabbit.Host(options.Host, options.Port, options.VirtualHost, host =>
                {
                    host.Username(options.Username);
                    host.Password(options.Password);
                    host.PublisherConfirmation = true;
                    BrokerCluster.Configure(host, options);
                    BrokerTls.Configure(host, options, context.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(BusSetup)));
                });
                rabbit.PrefetchCount = options.PrefetchCount;
                rabbit.ConcurrentMessageLimit = options.ConcurrentMessageLimit;
                ConfigurePromptResultRouting(rabbit);
                configureBus?.Invoke(context, rabbit);
                rabbit.ConfigureEndpoints(context);
            });
        });
        return services;
    }

    /// <summary>
    /// Declares a work queue with the type that <see cref="RabbitMqOptions.WorkQueueType"/> names. The classic type
    /// is named too, because a broker whose virtual host defaults to another type would otherwise apply that one.
    /// </summary>
    public static void ConfigureWorkQueue(IReceiveEndpointConfigurator endpoint, RabbitMqOptions options)
    {
        if (endpoint is not IRabbitMqReceiveEndpointConfigurator rabbit)
        {
            return;
        }

        if (options.WorkQueueType == RabbitMqOptions.QuorumQueueType)
        {
            rabbit.SetQuorumQueue();
        }
        else
        {
            rabbit.SetQueueArgument("x-queue-type", RabbitMqOptions.ClassicQueueType);
        }
    }

    /// <summary>
    /// Results go to a direct exchange keyed by the Ingress instance that holds the user's connections, so each
    /// instance receives only its own results, and a result for an instance that is gone is dropped by the broker
    /// rather than parked in a queue.
    /// </summary>
    public static void ConfigurePromptResultRouting(IRabbitMqBusFactoryConfigurator rabbit)
    {
        rabbit.Publish<PromptCompleted>(p => p.ExchangeType = ExchangeType.Direct);
        rabbit.Send<PromptCompleted>(s => s.UseRoutingKeyFormatter(c => c.Message.ReplyTo));
        rabbit.Publish<PromptFailed>(p => p.ExchangeType = ExchangeType.Direct);
        rabbit.Send<PromptFailed>(s => s.UseRoutingKeyFormatter(c => c.Message.ReplyTo));
        rabbit.Publish<PromptPiece>(p => p.ExchangeType = ExchangeType.Direct);
        rabbit.Send<PromptPiece>(s => s.UseRoutingKeyFormatter(c => c.Message.ReplyTo));
        rabbit.Publish<AllowanceThresholdCrossed>(p => p.ExchangeType = ExchangeType.Direct);
        rabbit.Send<AllowanceThresholdCrossed>(s => s.UseRoutingKeyFormatter(c => c.Message.ReplyTo));
    }
}

/// <summary>Rejects, at start, a work queue type other than quorum or classic, and classic work queues on a cluster.</summary>
internal sealed class WorkQueueTypeValidator : IValidateOptions<RabbitMqOptions>
{
    public ValidateOptionsResult Validate(string? name, RabbitMqOptions options)
    {
        if (options.WorkQueueType is not (RabbitMqOptions.QuorumQueueType or RabbitMqOptions.ClassicQueueType))
        {
            return ValidateOptionsResult.Fail($"RabbitMq:WorkQueueType must be quorum or classic, not '{options.WorkQueueType}'.");
        }

        return options.WorkQueueType == RabbitMqOptions.ClassicQueueType && options.ClusterNodes.Count > 0
            ? ValidateOptionsResult.Fail(
                "RabbitMq:WorkQueueType is classic, which keeps each work queue on one node, while RabbitMq:ClusterNodes lists a cluster. "
                + "Set RabbitMq:WorkQueueType to quorum, so that the queues survive the loss of a node.")
            : ValidateOptionsResult.Success;
    }
}
