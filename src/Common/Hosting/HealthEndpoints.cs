using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace AddOnEvents.Common.Hosting;

public static class HealthEndpoints
{
    /// <summary>
    /// Maps <c>/health/live</c> (the process runs; no dependency is checked, so a broker outage does not get the
    /// process restarted) and <c>/health/ready</c> (broker and database reachable). Readiness names each check and
    /// its status, so an operator sees which dependency is down, but no descriptions or exception texts, because the
    /// endpoint takes no credentials.
    /// </summary>
    public static IEndpointRouteBuilder MapAddOnEventsHealth(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapHealthChecks("/health/live", new HealthCheckOptions { Predicate = _ => false });
        endpoints.MapHealthChecks("/health/ready", new HealthCheckOptions
        {
            Predicate = check => check.Tags.Contains("ready"),
            ResponseWriter = WriteReadinessAsync,
            ResultStatusCodes =
            {
                [HealthStatus.Healthy] = StatusCodes.Status200OK,
                // MassTransit reports a bus that lost its broker as degraded; such an instance cannot take work.
                [HealthStatus.Degraded] = StatusCodes.Status503ServiceUnavailable,
                [HealthStatus.Unhealthy] = StatusCodes.Status503ServiceUnavailable,
            },
        });
        return endpoints;
    }

    private static Task WriteReadinessAsync(HttpContext context, HealthReport report) =>
        context.Response.WriteAsJsonAsync(new
        {
            status = report.Status.ToString(),
            checks = report.Entries.ToDictionary(entry => entry.Key, entry => entry.Value.Status.ToString()),
        });
}
