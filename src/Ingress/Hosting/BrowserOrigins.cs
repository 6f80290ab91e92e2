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
        return services.AddCors(cors => cors.AddPolicy(PolicyName, policy => Configure(policy, origins)));
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
