using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Console;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace AddOnEvents.Common.Hosting;

/// <summary>The <c>Telemetry</c> section. The standard <c>OTEL_*</c> variables work too, and these settings win over them.</summary>
public sealed class TelemetryOptions
{
    public const string SectionName = "Telemetry";

    /// <summary>Collector address for traces and metrics. Unset, and no <c>OTEL_EXPORTER_OTLP_ENDPOINT</c>: nothing is exported.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>Protocol for <see cref="OtlpEndpoint"/>: <c>grpc</c> (port 4317) or <c>http/protobuf</c> (port 4318).</summary>
    public string OtlpProtocol { get; set; } = "grpc";

    /// <summary>Serves the metrics for scraping at <c>/metrics</c> on the service's HTTP port.</summary>
    public bool Prometheus { get; set; }
}

/// <summary>
/// OpenTelemetry for every service: spans from HTTP requests, SignalR hub calls, the bus and upstream calls, and
/// metrics from the runtime, the web server, HttpClient, MassTransit and AddOnEvents itself. Nothing recorded here
/// carries a prompt, an answer, a key, a token or an end-user id: the instrumentations record no headers or
/// bodies and redact query strings (where SignalR carries the user's token).
/// </summary>
public static class Telemetry
{
    /// <summary>Name of the ActivitySource and the Meter of AddOnEvents' own spans and metrics.</summary>
    public const string Name = "AddOnEvents";

    /// <summary>MassTransit 8 reports its spans and metrics under this name and carries the trace in message headers.</summary>
    public const string MassTransitName = "MassTransit";

    public const string MetricsPath = "/metrics";

    public static readonly ActivitySource ActivitySource = new(Name);

    public static IHostApplicationBuilder AddAddOnEventsTelemetry(this IHostApplicationBuilder builder, string serviceName)
    {
        var options = ReadOptions(builder.Configuration);
        var configuration = builder.Configuration;

        // Console lines carry no time by default, which makes a service log useless for matching an incident.
        // Logging:Console:FormatterOptions:TimestampFormat still overrides this. Without a formatter name the console
        // logger copies its own older settings over the formatter's, so the name is set too.
        builder.Services.PostConfigure<ConsoleLoggerOptions>(console => console.FormatterName ??= ConsoleFormatterNames.Simple);
        builder.Services.PostConfigure<SimpleConsoleFormatterOptions>(console =>
        {
            console.TimestampFormat ??= "yyyy-MM-ddTHH:mm:ss.fffZ ";
            console.UseUtcTimestamp = true;
        });
        builder.Services.AddAddOnEventsMetrics();

        // Outgoing HTTP goes to third parties only: the AI provider and the hosts' webhooks. The default propagator
        // would also send baggage, which carries MassTransit's conversation and correlation ids, so the trace context
        // alone is left to the HTTP handlers, and those send none (see their ActivityHeadersPropagator).
        OpenTelemetry.Sdk.SetDefaultTextMapPropagator(new OpenTelemetry.Context.Propagation.TraceContextPropagator());
        var telemetry = builder.Services.AddOpenTelemetry()
            .ConfigureResource(resource => resource.AddService(serviceName, serviceNamespace: "addonevents"))
            .WithTracing(tracing => tracing
                .AddSource(Name, MassTransitName)
                .AddAspNetCoreInstrumentation(aspNet =>
                {
                    aspNet.Filter = context => !IsOperatorPath(context.Request.Path);
                    aspNet.EnrichWithHttpResponse = RedactUserIdInPath;
                })
                .AddHttpClientInstrumentation())
            .WithMetrics(metrics => metrics
                .AddMeter(Name, MassTransitName)
                .AddRuntimeInstrumentation()
                .AddAspNetCoreInstrumentation()
                .AddHttpClientInstrumentation());

        if (options.OtlpEndpoint is { } endpoint)
        {
            var protocol = options.OtlpProtocol == "grpc" ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
            telemetry.WithTracing(tracing => tracing.AddOtlpExporter(otlp => Point(otlp, endpoint, protocol, "v1/traces")));
            telemetry.WithMetrics(metrics => metrics.AddOtlpExporter(otlp => Point(otlp, endpoint, protocol, "v1/metrics")));
        }
        else if (!string.IsNullOrWhiteSpace(configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            // The exporter reads the endpoint, protocol, headers and timeouts from the OTEL_* settings itself.
            telemetry.WithTracing(tracing => tracing.AddOtlpExporter());
            telemetry.WithMetrics(metrics => metrics.AddOtlpExporter());
        }

        if (options.Prometheus)
        {
            telemetry.WithMetrics(metrics => metrics.AddPrometheusExporter());
        }

        return builder;
    }

    /// <summary>Registers the AddOnEvents meter alone, for hosts and tests that need the instruments without exporters.</summary>
    public static IServiceCollection AddAddOnEventsMetrics(this IServiceCollection services)
    {
        services.AddMetrics();
        services.TryAddSingleton<AddOnEventsMetrics>();
        return services;
    }

    /// <summary>Maps the Prometheus scrape endpoint when <c>Telemetry:Prometheus</c> is true.</summary>
    public static IEndpointRouteBuilder MapAddOnEventsTelemetry(this IEndpointRouteBuilder endpoints)
    {
        var configuration = endpoints.ServiceProvider.GetRequiredService<IConfiguration>();
        if (ReadOptions(configuration).Prometheus)
        {
            endpoints.MapPrometheusScrapingEndpoint(MetricsPath);
        }

        return endpoints;
    }

    private static TelemetryOptions ReadOptions(IConfiguration configuration)
    {
        var options = configuration.GetSection(TelemetryOptions.SectionName).Get<TelemetryOptions>() ?? new TelemetryOptions();
        if (string.IsNullOrWhiteSpace(options.OtlpEndpoint))
        {
            options.OtlpEndpoint = null;
        }
        else if (!Uri.TryCreate(options.OtlpEndpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new InvalidOperationException(
                "Telemetry:OtlpEndpoint must be an absolute http or https address of an OpenTelemetry collector, such as http://otel-collector:4317.");
        }

        if (options.OtlpProtocol is not ("grpc" or "http/protobuf"))
        {
            throw new InvalidOperationException("Telemetry:OtlpProtocol must be 'grpc' or 'http/protobuf'.");
        }

        return options;
    }

    private static void Point(OtlpExporterOptions otlp, string endpoint, OtlpExportProtocol protocol, string signalPath)
    {
        otlp.Protocol = protocol;
        // Over HTTP each signal has a path of its own; gRPC takes the bare address.
        otlp.Endpoint = protocol == OtlpExportProtocol.HttpProtobuf
            ? new Uri(new Uri(endpoint.EndsWith('/') ? endpoint : endpoint + "/"), signalPath)
            : new Uri(endpoint);
    }

    /// <summary>
    /// Replaces the span's path with the route template when the route names a host user id, because host user ids
    /// may be email addresses and spans must not carry them.
    /// </summary>
    private static void RedactUserIdInPath(Activity activity, HttpResponse response)
    {
        if (response.HttpContext.GetEndpoint() is RouteEndpoint { RoutePattern.RawText: { } template }
            && template.Contains("{userId}", StringComparison.Ordinal))
        {
            activity.SetTag("url.path", template);
        }
    }

    /// <summary>Probes and scrapes arrive every few seconds and would bury the traces of real requests.</summary>
    private static bool IsOperatorPath(PathString path) =>
        path.StartsWithSegments("/health", StringComparison.OrdinalIgnoreCase)
        || path.StartsWithSegments(MetricsPath, StringComparison.OrdinalIgnoreCase);
}
