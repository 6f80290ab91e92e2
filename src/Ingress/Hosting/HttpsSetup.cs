using AddOnEvents.Contracts;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace AddOnEvents.Ingress.Hosting;

/// <summary>
/// HTTPS at the edge. Kestrel takes its certificate from the standard configuration
/// (<c>Kestrel:Certificates:Default:Path</c> and <c>KeyPath</c>, or <c>Kestrel:Endpoints:{name}:Certificate</c>).
/// With <c>Ingress:RequireHttps</c> (default: on outside Development), responses over HTTPS carry HSTS, and a request
/// over plain HTTP is redirected when it is a page load without credentials, and rejected otherwise, because its
/// credentials or prompt have already crossed the network unencrypted. The health endpoints stay reachable over plain
/// HTTP, because orchestrator probes call the pod or container address directly. They take no credentials and return
/// no details.
/// </summary>
public static partial class HttpsSetup
{
    private const string RequireHttpsSetting = "Ingress:RequireHttps";

    public static WebApplicationBuilder AddIngressHttps(this WebApplicationBuilder builder)
    {
        bool required = builder.Configuration.GetValue<bool?>(RequireHttpsSetting) ?? !builder.Environment.IsDevelopment();
        builder.Services.AddSingleton(new HttpsPolicy(required));
        builder.Services.AddHsts(hsts =>
        {
            hsts.MaxAge = TimeSpan.FromDays(365);
            // The default list exempts localhost and loopback addresses. With RequireHttps on, every host gets HSTS.
            hsts.ExcludedHosts.Clear();
        });
        // 308 keeps the method and the body, and a page load is the only request redirected.
        builder.Services.AddHttpsRedirection(redirect => redirect.RedirectStatusCode = StatusCodes.Status308PermanentRedirect);
        return builder;
    }

    public static WebApplication UseIngressHttps(this WebApplication app)
    {
        if (!app.Services.GetRequiredService<HttpsPolicy>().Required)
        {
            return app;
        }

        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HttpsSetup));
        app.Lifetime.ApplicationStarted.Register(() => WarnWithoutHttpsAddress(app, logger));
        app.UseHsts();
        app.UseWhen(context => !context.Request.IsHttps && !IsHealthCheck(context.Request), plain =>
        {
            plain.Use(async (context, next) =>
            {
                if (IsPageLoad(context.Request))
                {
                    await next(context);
                    return;
                }

                string route = Log.RouteOf(context.GetEndpoint());
                LogPlainHttpRejected(logger, context.Request.Method, route);
                await ApiErrors.WriteAsync(context, StatusCodes.Status400BadRequest, ErrorCodes.HttpsRequired,
                    "This server accepts requests only over HTTPS. Send the request again to the https:// address, and replace any "
                    + "credential that was sent over plain HTTP.");
            });
            // The middleware takes the port from the server's https address, or from HTTPS_PORT when a proxy or a port
            // mapping changes it.
            plain.UseHttpsRedirection();
        });
        return app;
    }

    private static bool IsHealthCheck(HttpRequest request) => request.Path.StartsWithSegments("/health");

    /// <summary>Tells whether a request is a browser loading a page: GET or HEAD with no credentials.</summary>
    private static bool IsPageLoad(HttpRequest request) =>
        (HttpMethods.IsGet(request.Method) || HttpMethods.IsHead(request.Method))
        && !request.Headers.ContainsKey("Authorization")
        && !request.Query.ContainsKey("access_token");

    private static void WarnWithoutHttpsAddress(WebApplication app, ILogger logger)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        if (!addresses.Any(a => a.StartsWith("https://", StringComparison.OrdinalIgnoreCase)))
        {
            LogNoHttpsAddress(logger, string.Join(", ", addresses));
        }
    }

    [LoggerMessage(EventId = 1101, Level = LogLevel.Warning,
        Message = "Ingress:RequireHttps is on but Ingress listens on no https address ({Addresses}), so it rejects every API request. "
            + "Configure an https URL and Kestrel:Certificates:Default, or set Ingress:RequireHttps=false behind a TLS-terminating proxy")]
    private static partial void LogNoHttpsAddress(ILogger logger, string addresses);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Information, Message = "Rejected {Method} {Route} over plain HTTP")]
    private static partial void LogPlainHttpRejected(ILogger logger, string method, string route);
}

/// <summary>The decision whether Ingress requires HTTPS, made once at start from configuration and environment.</summary>
public sealed record HttpsPolicy(bool Required);
