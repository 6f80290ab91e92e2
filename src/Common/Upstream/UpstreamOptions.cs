using System.ComponentModel.DataAnnotations;
using AddOnEvents.Common.Net;
using Betalgo.Ranul.OpenAI;
using Betalgo.Ranul.OpenAI.Managers;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Common.Upstream;

/// <summary>The OpenAI-compatible API that keys are checked against and prompts are sent to.</summary>
public sealed class UpstreamOptions
{
    public const string SectionName = "Upstream";

    /// <summary>
    /// Base URL of the server; requests go to <c>{BaseUrl}v1/...</c>. The form OpenAI SDKs take, ending in "/v1", is
    /// accepted too, and a missing final '/' is added.
    /// </summary>
    [Required]
    public Uri BaseUrl { get; set; } = new("https://api.openai.com/");

    [Required]
    public string DefaultModel { get; set; } = "gpt-4o-mini";

    /// <summary>Whole-request timeout; long completions take minutes, so the default is far above HttpClient's 100 s.</summary>
    [Range(1, 3600)]
    public int TimeoutSeconds { get; set; } = 300;

    /// <summary>Timeout of the cheap call that checks a newly registered key.</summary>
    [Range(1, 300)]
    public int KeyCheckTimeoutSeconds { get; set; } = 15;

    /// <summary>Upstream calls per request at most, counted across every delivery of the request's message.</summary>
    [Range(1, 10)]
    public int MaxAttempts { get; set; } = 3;

    /// <summary>First backoff after a 5xx, a connection error or a timeout; it doubles per attempt, with jitter.</summary>
    [Range(1, 60_000)]
    public int RetryBaseDelayMilliseconds { get; set; } = 500;

    /// <summary>Longest Retry-After that a worker sleeps through; a longer one fails at once with the retry time.</summary>
    [Range(0, 600)]
    public int MaxRetryAfterSeconds { get; set; } = 20;
}

/// <summary>Creates an OpenAI client bound to one provider key for one call.</summary>
public sealed class UpstreamClientFactory(IHttpMessageHandlerFactory handlers, IOptions<UpstreamOptions> options, TimeProvider clock)
{
    public const string HttpClientName = "upstream";

    public UpstreamOptions Options => options.Value;

    /// <summary>
    /// Returns a service on a fresh HttpClient, because the SDK writes the key into the client's default headers;
    /// a shared client would carry one app's key into another app's request. The connection pool underneath is
    /// shared; <paramref name="observed"/> receives what the HTTP layer sees of this call's responses.
    /// </summary>
    /// <exception cref="UnusableProviderKeyException">The key is not a valid bearer credential.</exception>
    public OpenAIService Create(string apiKey, UpstreamCallInfo? observed = null)
    {
        if (!ProviderKeyFormat.IsBearerCredential(apiKey))
        {
            throw new UnusableProviderKeyException();
        }

        HttpMessageHandler handler = handlers.CreateHandler(HttpClientName);
        if (observed is not null)
        {
            handler = new UpstreamResponseObserver(observed, clock) { InnerHandler = handler };
        }

        var http = new HttpClient(handler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
        return new OpenAIService(
            new OpenAIOptions { ApiKey = apiKey, BaseDomain = options.Value.BaseUrl.ToString() },
            http);
    }

    /// <summary>
    /// Returns the base URL with a final '/' and without a final "v1" segment. A null or relative URL, or one with a
    /// query or fragment, is returned unchanged.
    /// </summary>
    public static Uri ServerRoot(Uri baseUrl)
    {
        if (baseUrl is null || !baseUrl.IsAbsoluteUri || baseUrl.Query.Length > 0 || baseUrl.Fragment.Length > 0)
        {
            return baseUrl!;
        }

        string path = baseUrl.AbsolutePath.TrimEnd('/');
        if (path.EndsWith("/v1", StringComparison.OrdinalIgnoreCase))
        {
            path = path[..^3];
        }

        return new UriBuilder(baseUrl) { Path = path + "/" }.Uri;
    }

    public static IServiceCollection AddUpstream(IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<UpstreamOptions>()
            .Bind(configuration.GetSection(UpstreamOptions.SectionName))
            .PostConfigure(o => o.BaseUrl = ServerRoot(o.BaseUrl))
            .ValidateDataAnnotations()
            .Validate(o => o.BaseUrl.IsAbsoluteUri && o.BaseUrl.AbsolutePath.EndsWith('/'),
                "Upstream:BaseUrl must be an absolute URL that ends with '/', for example https://api.openai.com/.")
            .Validate(o => !o.BaseUrl.IsAbsoluteUri || o.BaseUrl.Scheme == Uri.UriSchemeHttps || Loopback.IsLoopbackHost(o.BaseUrl.Host),
                "Upstream:BaseUrl must use https://, because requests carry the app's API key and the prompt; plain http:// is "
                + "allowed only for a loopback address (localhost, 127.0.0.0/8, ::1) such as a local model server.")
            .ValidateOnStart();
        services.AddHttpClient(HttpClientName)
            .ConfigurePrimaryHttpMessageHandler(() => new SocketsHttpHandler
            {
                // A redirect would resend the Authorization header to wherever the upstream points.
                AllowAutoRedirect = false,
                PooledConnectionLifetime = TimeSpan.FromMinutes(5),

                // The unread rest of a cancelled answer is not drained to reuse the connection, because the provider
                // keeps generating, and billing, while the handler drains (up to 2 s by default).
                MaxResponseDrainSize = 0,

                // The provider is a third party: trace context and baggage, which carry request ids, stay here.
                ActivityHeadersPropagator = System.Diagnostics.DistributedContextPropagator.CreateNoOutputPropagator(),
            });
        services.AddSingleton<UpstreamClientFactory>();
        return services;
    }
}
