using AddOnEvents.Contracts;
using Microsoft.AspNetCore.Cors.Infrastructure;

namespace AddOnEvents.Ingress.Hosting;

/// <summary>
/// Cross-origin access for the endpoints a host page's browser calls with an end-user token: the hub, the prompt
/// API, the user's own usage and the OpenAI-compatible API. Pages of the origins in <c>Ingress:AllowedOrigins</c>
/// may call them; with none set, only pages served by Ingress itself can. Requests carry their token in a header
/// or the hub's query string, never in cookies, so the policy allows no credentials.
/// </summary>
public static class BrowserOrigins
{
    public const string PolicyName = "HostPages";

    private const string Setting = "Ingress:AllowedOrigins";

    public static IServiceCollection AddBrowserOrigins(this IServiceCollection services, IConfiguration configuration)
    {
        string[] origins = Parse(configuration.GetSection(Setting).Get<string[]>() ?? []);
        services.AddSingleton(new AllowedOriginList(origins));
        return services.AddCors(cors => cors.AddPolicy(PolicyName, policy => Configure(policy, origins)));
    }

    /// <summary>
    /// Rejects requests to the hub from browser pages of other origins than Ingress's own and the allowed ones. CORS
    /// does not cover WebSocket connections, so without this a page of any site could open the hub with a token it
    /// got hold of. Clients that are not browsers send no Origin header and pass.
    /// </summary>
    public static IApplicationBuilder UseHubOriginCheck(this IApplicationBuilder app, PathString hubPath)
    {
        var allowed = app.ApplicationServices.GetRequiredService<AllowedOriginList>();
        var logger = app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(BrowserOrigins).FullName!);
        return app.Use((context, next) =>
        {
            var request = context.Request;
            if (request.Path.StartsWithSegments(hubPath) && request.Headers.Origin.ToString() is { Length: > 0 } origin
                && !allowed.Allows(origin, request.Host))
            {
                // The origin is not logged: it is text of the caller's choosing.
                Log.HubOriginRejected(logger);
                return ApiErrors.WriteAsync(context, StatusCodes.Status403Forbidden, ErrorCodes.Forbidden,
                    "Pages of this origin may not open the add-on's connection. The operator lists allowed origins in Ingress:AllowedOrigins.");
            }

            return next(context);
        });
    }

    /// <summary>Returns the origins in the form browsers send them, or throws naming the first invalid entry.</summary>
    public static string[] Parse(IEnumerable<string> values)
    {
        var origins = new List<string>();
        foreach (string value in values.Select(v => v.Trim()).Where(v => v.Length > 0))
        {
            if (value == "*")
            {
                origins.Add(value);
                continue;
            }

            if (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || uri.Scheme is not ("https" or "http")
                || uri.AbsolutePath != "/" || uri.Query.Length > 0 || uri.Fragment.Length > 0 || uri.UserInfo.Length > 0)
            {
                throw new InvalidOperationException(
                    $"{Setting} contains an invalid origin ('{value}'). Give each as scheme, host and optional port, such as https://app.example.com, or * for any origin.");
            }

            origins.Add(uri.GetLeftPart(UriPartial.Authority));
        }

        return [.. origins];
    }

    /// <summary>The origins from <c>Ingress:AllowedOrigins</c>, as browsers send them.</summary>
    private sealed record AllowedOriginList(string[] Origins)
    {
        /// <summary>Tells whether a page of the origin may call Ingress: it is listed, or it is Ingress's own host and port.</summary>
        public bool Allows(string origin, HostString host) =>
            Origins.Contains("*")
            || Origins.Contains(origin, StringComparer.OrdinalIgnoreCase)
            || (Uri.TryCreate(origin, UriKind.Absolute, out var uri) && string.Equals(uri.Authority, host.Value, StringComparison.OrdinalIgnoreCase));
    }

    private static void Configure(CorsPolicyBuilder policy, string[] origins)
    {
        if (origins.Contains("*"))
        {
            policy.AllowAnyOrigin();
        }
        else
        {
            policy.WithOrigins(origins);
        }

        policy.WithMethods("GET", "POST")
            .AllowAnyHeader()
            .WithExposedHeaders("Retry-After")
            .SetPreflightMaxAge(TimeSpan.FromMinutes(10));
    }
}
