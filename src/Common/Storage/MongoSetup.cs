using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MongoDB.Bson;
using MongoDB.Bson.Serialization;
using MongoDB.Bson.Serialization.Conventions;
using MongoDB.Bson.Serialization.Serializers;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

public sealed class MongoOptions
{
    public const string SectionName = "Mongo";

    [Required(ErrorMessage = "Mongo:ConnectionString is missing: set it to a mongodb:// connection string.")]
    public string ConnectionString { get; set; } = "";

    [Required]
    [RegularExpression("^[A-Za-z0-9_-]{1,60}$", ErrorMessage = "Mongo:Database must be 1-60 letters, digits, '_' or '-'.")]
    public string Database { get; set; } = "addonevents";
}

public static class MongoSetup
{
    private static int _conventionsRegistered;

    public static IServiceCollection AddMongoStorage(this IServiceCollection services, IConfiguration configuration)
    {
        RegisterConventions();
        services.AddOptions<MongoOptions>()
            .Bind(configuration.GetSection(MongoOptions.SectionName))
            .ValidateDataAnnotations()
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<MongoOptions>, MongoTlsValidator>();
        services.AddSingleton<IMongoClient>(sp =>
        {
            var settings = MongoTls.CreateSettings(
                sp.GetRequiredService<IOptions<MongoOptions>>().Value.ConnectionString,
                sp.GetService<ILoggerFactory>()?.CreateLogger(typeof(MongoTls)) ?? NullLogger.Instance);
            // Fail an operation within seconds while the database is away, so callers answer 503 instead of hanging.
            settings.ServerSelectionTimeout = TimeSpan.FromSeconds(5);
            settings.ConnectTimeout = TimeSpan.FromSeconds(5);
            return new MongoClient(settings);
        });
        // Key and app documents (KeyStore here, AppStore in Ingress) and pending webhook deliveries (WebhookOutbox in
        // Ingress) must survive a failover of a replica set once a write was acknowledged, so their writes wait for a
        // majority of the members whatever the connection string says. The short-lived stores keep the connection string's write concern.
        services.AddSingleton(sp => ConnectionDatabase(sp).WithWriteConcern(WriteConcern.WMajority));
        services.AddSingleton<KeyStore>();
        services.AddSingleton(sp => new PromptResultStore(ConnectionDatabase(sp)));
        services.AddSingleton(sp => new UsageStore(ConnectionDatabase(sp)));
        services.AddSingleton(sp => new TokenReservationStore(ConnectionDatabase(sp), sp.GetRequiredService<UsageStore>()));
        services.AddSingleton(sp => new RateCounterStore(ConnectionDatabase(sp)));
        services.AddSingleton(sp => new AddonActivation(ConnectionDatabase(sp)));
        services.AddHealthChecks().AddCheck<MongoHealthCheck>("mongodb", tags: ["ready"]);
        return services;

        static IMongoDatabase ConnectionDatabase(IServiceProvider sp) => sp.GetRequiredService<IMongoClient>()
            .GetDatabase(sp.GetRequiredService<IOptions<MongoOptions>>().Value.Database);
    }

    /// <summary>Registers the serialization conventions of every store once per process; later calls do nothing.</summary>
    public static void RegisterConventions()
    {
        if (Interlocked.Exchange(ref _conventionsRegistered, 1) == 1)
        {
            return;
        }

        BsonSerializer.TryRegisterSerializer(new GuidSerializer(GuidRepresentation.Standard));
        ConventionRegistry.Register(
            "addonevents",
            new ConventionPack { new CamelCaseElementNameConvention(), new IgnoreExtraElementsConvention(true) },
            type => type.Namespace?.StartsWith("AddOnEvents", StringComparison.Ordinal) == true);
    }
}

internal sealed class MongoHealthCheck(IMongoDatabase database) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            await database.RunCommandAsync<BsonDocument>(new BsonDocument("ping", 1), cancellationToken: cancellationToken);
            return HealthCheckResult.Healthy();
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException)
        {
            return HealthCheckResult.Unhealthy("The database does not answer.", ex);
        }
    }
}

public static class MongoErrors
{
    /// <summary>
    /// Tells whether a write failed on a unique index. NOTE: MongoDB reports this as a MongoWriteException, while
    /// jongodb (used in tests and local runs) sends a MongoCommandException with code 11000; both are accepted here.
    /// </summary>
    public static bool IsDuplicateKey(MongoException exception) => exception switch
    {
        MongoWriteException write => write.WriteError?.Category == ServerErrorCategory.DuplicateKey,
        MongoCommandException command => command.Code == 11000,
        _ => false,
    };
}
