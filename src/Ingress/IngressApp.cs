using System.Security.Claims;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Consumers;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Ingress.Endpoints;
using AddOnEvents.Ingress.Hosting;
using AddOnEvents.Ingress.Hubs;
using AddOnEvents.Ingress.Options;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Ingress.Webhooks;
using MassTransit;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using MongoDB.Driver;
using RabbitMQ.Client;

namespace AddOnEvents.Ingress;

/// <summary>Builds the Ingress web application; tests call it with their own configuration.</summary>
public static class IngressApp
{
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(args);
        // Request logs at Information include query strings, and SignalR puts the user's token there. The request
        // scope of this category contains the path, which names host user ids, and a sink that writes scopes copies it
        // into every line of the request. Its other lines report start-up failures, which also end the process with
        // the exception on standard error.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        builder.Logging.AddFilter("Microsoft.AspNetCore.Http.Connections", LogLevel.Information);

        // These floors hold even when an operator turns every log up to Trace. ASP.NET Core's Debug lines quote request
        // paths, which carry host user ids and, on a mistyped URL, whatever the caller put there (the static file
        // middleware logs every unmatched path). SignalR's print each hub call with its arguments (the prompt text).
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore.SignalR", LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore.Routing", LogLevel.Information);
        builder.Logging.AddFilter("Microsoft.AspNetCore.Server.Kestrel.BadRequests", LogLevel.Information);

        // HubFailureLogger logs failed hub calls instead, without an Error line for each rejected prompt.
        builder.Logging.AddFilter(HubFailureLogger.DispatcherCategory, LogLevel.None);

        // Every malformed or foreign bearer (an app credential on /v1 is one) logs a stack trace at Information.
        builder.Logging.AddFilter("Microsoft.AspNetCore.Authentication.JwtBearer", LogLevel.Warning);
        configure?.Invoke(builder);
        builder.AddIngressHttps();
        builder.AddAddOnEventsTelemetry("ingress");

        var services = builder.Services;
        var configuration = builder.Configuration;
        services.TryAddSingleton(TimeProvider.System);
        services.AddMemoryCache();
        services.AddOptions<PromptOptions>().Bind(configuration.GetSection(PromptOptions.SectionName)).ValidateDataAnnotations().ValidateOnStart();
        // Kestrel's default of 30 MB lets one end user make Ingress buffer megabytes per request before the prompt
        // length is checked. The largest valid body is the longest prompt with every character JSON-escaped as
        // \uXXXX (6 bytes), plus room for the other fields.
        services.AddOptions<KestrelServerOptions>().Configure<IOptions<PromptOptions>>((kestrel, prompts) =>
            kestrel.Limits.MaxRequestBodySize = Math.Max(64 * 1024, (long)prompts.Value.MaxPromptCharacters * 6 + 16 * 1024));
        services.AddOptions<AuthOptions>().Bind(configuration.GetSection(AuthOptions.SectionName)).ValidateDataAnnotations()
            .Validate(o => IsValidKey(() => o.SigningKeyBytes()),
                "Auth:TokenSigningKey is invalid: it must be base64 of at least 32 bytes (openssl rand -base64 48).")
            .Validate(o => IsValidKey(() => o.UserIdKeyBytes()),
                "Auth:UserIdKey is invalid: it must be base64 of at least 32 bytes (openssl rand -base64 48), "
                + "or unset to derive user pseudonyms from Auth:TokenSigningKey.")
            .Validate(o => IsValidKey(() => o.PreviousSigningKeyBytes()),
                "Auth:PreviousTokenSigningKeys has an invalid entry: each must be base64 of at least 32 bytes, as Auth:TokenSigningKey was.")
            .ValidateOnStart();
        services.AddMongoStorage(configuration);
        services.AddSealingKey(configuration, privateKey: false);
        services.AddSingleton<SealingPublicKey>();
        services.AddSingleton<WebhookSecretCipher>();
        services.AddSingleton<AppStore>();
        services.AddSingleton<UserTokens>();
        services.AddSingleton<ConfirmedPublisher>();
        services.AddSingleton<UserConnections>();
        services.AddSingleton<RevokedConnectionSweeper>();
        services.AddHostedService(sp => sp.GetRequiredService<RevokedConnectionSweeper>());
        services.AddBrowserOrigins(configuration);
        services.AddSingleton<PromptSubmitter>();
        services.AddSingleton<PromptLimiter>();
        services.AddSingleton<PromptCanceller>();
        services.AddSingleton<AcceptedPrompts>();
        services.AddSingleton<PendingReplies>();
        services.AddSingleton<UserControlStore>();
        services.AddSingleton<UserRefCipher>();
        services.AddSingleton<WebhookOutbox>();
        services.AddSingleton<WebhookSender>();
        services.AddHostedService(sp => sp.GetRequiredService<WebhookSender>());
        services.AddOptions<WebhookOptions>().Bind(configuration.GetSection(WebhookOptions.SectionName));
        // A misspelt setting would otherwise leave new apps without the limit the operator meant to set.
        services.AddOptions<NewAppLimits>()
            .Bind(configuration.GetSection(NewAppLimits.SectionName), binder => binder.ErrorOnUnknownConfiguration = true)
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<NewAppLimits>, NewAppLimitsValidator>();
        services.AddHttpClient(WebhookSender.HttpClientName)
            .ConfigurePrimaryHttpMessageHandler(sp =>
            {
                bool allowPrivate = sp.GetRequiredService<IOptions<WebhookOptions>>().Value.AllowPrivateAddresses;
                return new SocketsHttpHandler
                {
                    AllowAutoRedirect = false,
                    ConnectCallback = (context, cancellationToken) => WebhookAddresses.ConnectAsync(context, allowPrivate, cancellationToken),

                    // The host's server is a third party: it gets no trace ids of ours.
                    ActivityHeadersPropagator = System.Diagnostics.DistributedContextPropagator.CreateNoOutputPropagator(),
                };
            })

            // The client's own logs print the request URL, and webhook URLs often carry a secret in their path.
            .RemoveAllLoggers();
        services.AddSingleton(new ResultRoute(configuration["Ingress:InstanceId"] ?? Guid.NewGuid().ToString("N")[..12]));
        AddAuthentication(services);
        services.AddSignalR(hub =>
        {
            hub.MaximumReceiveMessageSize = 256 * 1024;
            hub.AddFilter<HubFailureLogger>();
        });
        services.AddSingleton<IUserIdProvider, PseudonymUserIdProvider>();
        AddBus(services, configuration);

        var app = builder.Build();
        app.UseExceptionHandler(handler => handler.Run(WriteUnhandledErrorAsync));
        app.UseStatusCodePages(WriteRoutingErrorAsync);
        app.Use(AddProtectiveHeaders);
        app.UseIngressHttps();
        app.UseDefaultFiles();
        app.UseStaticFiles();

        // Before authentication, because a browser's preflight carries no token.
        app.UseCors();
        app.UseHubOriginCheck(AddOnHub.Path);
        app.UseAuthentication();
        app.UseAuthorization();
        app.MapAddOnEventsHealth();
        app.MapAddOnEventsTelemetry();
        app.MapKeyEndpoints();
        app.MapApiEndpoints();
        app.MapOpenAICompatibleEndpoints();
        app.MapAddonEndpoints();
        app.MapDemoHostEndpoints(app.Configuration);
        // A connection lives past its token otherwise, so a token that expired or was meant to be short keeps working.
        app.MapHub<AddOnHub>(AddOnHub.Path, hub => hub.CloseOnAuthenticationExpiration = true).RequireCors(BrowserOrigins.PolicyName);
        return app;
    }

    private static void AddAuthentication(IServiceCollection services)
    {
        services.AddAuthentication()
            .AddScheme<AuthenticationSchemeOptions, AppCredentialsHandler>(AuthSchemes.AppCredentials, null)
            .AddScheme<AuthenticationSchemeOptions, AdminTokenHandler>(AuthSchemes.Admin, null)
            .AddJwtBearer(AuthSchemes.UserToken, _ => { });
        services.AddOptions<JwtBearerOptions>(AuthSchemes.UserToken).Configure<UserTokens>((jwt, tokens) =>
        {
            jwt.MapInboundClaims = false;
            jwt.TokenValidationParameters = new TokenValidationParameters
            {
                ValidIssuer = UserTokens.Issuer,
                ValidAudience = UserTokens.Audience,
                IssuerSigningKeys = tokens.ValidationKeys,
                ValidAlgorithms = [SecurityAlgorithms.HmacSha256],
                RequireExpirationTime = true,
                // Only Ingress instances issue and check these tokens, so the leeway covers drift between their
                // clocks alone, and an expired token stops working within seconds.
                ClockSkew = TimeSpan.FromSeconds(5),
                NameClaimType = AuthSchemes.UserIdClaim,
            };
            jwt.Events = new JwtBearerEvents
            {
                // Browsers cannot set headers on WebSocket requests, so SignalR clients send the token in the query.
                OnMessageReceived = context =>
                {
                    if (context.HttpContext.Request.Path.StartsWithSegments(AddOnHub.Path)
                        && context.Request.Query.TryGetValue("access_token", out var token))
                    {
                        context.Token = token;
                    }

                    return Task.CompletedTask;
                },
                OnChallenge = async context =>
                {
                    context.HandleResponse();
                    if (context.Response.HasStarted)
                    {
                        return;
                    }

                    context.Response.Headers.WWWAuthenticate = "Bearer";
                    await ApiErrors.WriteAsync(context.HttpContext, StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized,
                        context.AuthenticateFailure is TokenRejectedException rejected ? rejected.Message : BearerChallengeMessage(context.Request));
                },
                // A signature alone cannot show that the app still exists and that the secret that requested the
                // token is not revoked. The app comes from a cache of a few seconds.
                OnTokenValidated = async context =>
                {
                    var apps = context.HttpContext.RequestServices.GetRequiredService<AppStore>();
                    string? appId = context.Principal?.FindFirstValue(AuthSchemes.AppIdClaim);
                    AppDocument? app;
                    try
                    {
                        app = appId is null ? null : await apps.FindCachedAsync(appId, context.HttpContext.RequestAborted);
                    }
                    catch (OperationCanceledException) when (context.HttpContext.RequestAborted.IsCancellationRequested)
                    {
                        // The client disconnected, so there is no one to respond to and nothing for the error log.
                        context.Fail("The request was aborted.");
                        return;
                    }

                    var now = context.HttpContext.RequestServices.GetRequiredService<TimeProvider>().GetUtcNow().UtcDateTime;
                    if (app is null)
                    {
                        context.Fail(new TokenRejectedException(PromptLimiter.AppRemovedMessage));
                    }
                    else if (!app.HasActiveSecret(context.Principal, now))
                    {
                        context.Fail(new TokenRejectedException(PromptLimiter.SecretRevokedMessage));
                    }

                    // The host API never issues these ids. "@app" stands for the app's own backend, whose results must
                    // not reach a hub connection, and "." or ".." could never be erased through the user paths.
                    else if (context.Principal?.FindFirstValue(AuthSchemes.UserIdClaim) is not { } userId
                        || ApiEndpoints.UserIdProblem(userId) is not null)
                    {
                        context.Fail("The token names a user id that the host API never issues.");
                    }
                },
            };
        });
        services.AddAuthorizationBuilder()
            .AddPolicy(AuthSchemes.AppCredentials, policy => policy.AddAuthenticationSchemes(AuthSchemes.AppCredentials)
                .RequireClaim(AuthSchemes.AppIdClaim))
            .AddPolicy(AuthSchemes.Admin, policy => policy.AddAuthenticationSchemes(AuthSchemes.Admin).RequireRole("operator"))
            .AddPolicy(AuthSchemes.UserToken, policy => policy.AddAuthenticationSchemes(AuthSchemes.UserToken)
                .RequireClaim(AuthSchemes.AppIdClaim).RequireClaim(AuthSchemes.UserIdClaim))
            .AddPolicy(AuthSchemes.AnyCaller, policy => policy.AddAuthenticationSchemes(AuthSchemes.UserToken, AuthSchemes.AppCredentials)
                .RequireClaim(AuthSchemes.AppIdClaim).RequireClaim(AuthSchemes.UserIdClaim));
    }

    private static void AddBus(IServiceCollection services, IConfiguration configuration)
    {
        services.AddAddOnEventsBus(
            configuration,
            bus =>
            {
                bus.AddConsumer<PromptResultConsumer>().ExcludeFromConfigureEndpoints();
                bus.AddConsumer<AllowanceConsumer>().ExcludeFromConfigureEndpoints();
            },
            (context, rabbit) =>
            {
                var route = context.GetRequiredService<ResultRoute>();
                rabbit.ReceiveEndpoint(route.QueueName, endpoint =>
                {
                    // Results are useful only to the connections of this process. The queue survives a broker restart,
                    // and the broker deletes it once no instance has used it for a while, so a vanished instance leaves
                    // no answers behind for longer than that; results older than the client's patience expire too.
                    endpoint.SetQueueArgument("x-expires", (int)TimeSpan.FromMinutes(10).TotalMilliseconds);
                    endpoint.SetQueueArgument("x-message-ttl", (int)TimeSpan.FromMinutes(5).TotalMilliseconds);
                    endpoint.ConfigureConsumeTopology = false;
                    endpoint.Bind<PromptCompleted>(b =>
                    {
                        b.ExchangeType = ExchangeType.Direct;
                        b.RoutingKey = route.RoutingKey;
                    });
                    endpoint.Bind<PromptFailed>(b =>
                    {
                        b.ExchangeType = ExchangeType.Direct;
                        b.RoutingKey = route.RoutingKey;
                    });
                    endpoint.Bind<PromptPiece>(b =>
                    {
                        b.ExchangeType = ExchangeType.Direct;
                        b.RoutingKey = route.RoutingKey;
                    });
                    endpoint.Bind<AllowanceThresholdCrossed>(b =>
                    {
                        b.ExchangeType = ExchangeType.Direct;
                        b.RoutingKey = route.RoutingKey;
                    });
                    endpoint.ConfigureConsumer<AllowanceConsumer>(context);
                    var partitioner = endpoint.CreatePartitioner(Environment.ProcessorCount * 4);
                    endpoint.ConfigureConsumer<PromptResultConsumer>(context, consumer =>
                    {
                        consumer.Message<PromptPiece>(m => m.UsePartitioner(partitioner, c => c.Message.RequestId));
                        consumer.Message<PromptCompleted>(m => m.UsePartitioner(partitioner, c => c.Message.RequestId));
                        consumer.Message<PromptFailed>(m => m.UsePartitioner(partitioner, c => c.Message.RequestId));
                    });
                });
            });
    }

    /// <summary>Returns false when decoding a configured key throws because its value is malformed or too short.</summary>
    private static bool IsValidKey(Func<object> decode)
    {
        try
        {
            decode();
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    /// <summary>
    /// Sets the headers that keep browsers from framing the pages (the console takes app secrets), from guessing
    /// content types, and from caching API responses, several of which carry secrets or tokens.
    /// </summary>
    private static Task AddProtectiveHeaders(HttpContext context, RequestDelegate next)
    {
        var headers = context.Response.Headers;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers.ContentSecurityPolicy = "frame-ancestors 'none'";
        headers["Referrer-Policy"] = "no-referrer";
        if (ApiErrors.IsApiPath(context.Request.Path) || context.Request.Path.StartsWithSegments(AddOnHub.Path))
        {
            headers.CacheControl = "no-store";
        }

        return next(context);
    }

    /// <summary>
    /// Gives an API path that matches no endpoint, or not with this method, the same JSON error as every other
    /// API failure, in place of an empty body. Pages and static files keep the plain status.
    /// </summary>
    private static Task WriteRoutingErrorAsync(StatusCodeContext statusContext)
    {
        var context = statusContext.HttpContext;
        var request = context.Request;
        if (!ApiErrors.IsApiPath(request.Path))
        {
            return Task.CompletedTask;
        }

        // The messages do not repeat the path, because a caller may have pasted a key or a token into it.
        return context.Response.StatusCode switch
        {
            // Minimal APIs respond to a query or route value of the wrong type with an empty 400.
            StatusCodes.Status400BadRequest => ApiErrors.WriteAsync(context, StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "A query or route value of this address has the wrong type. Check the numbers and ids in it."),
            StatusCodes.Status404NotFound => ApiErrors.WriteAsync(context, StatusCodes.Status404NotFound, ErrorCodes.NotFound,
                "No API endpoint has this path. Check it against the README's API list."),
            StatusCodes.Status405MethodNotAllowed => ApiErrors.WriteAsync(context, StatusCodes.Status405MethodNotAllowed, ErrorCodes.MethodNotAllowed,
                $"{request.Method} is not allowed on this path. Allowed: {context.Response.Headers.Allow}."),
            _ => Task.CompletedTask,
        };
    }

    private static async Task WriteUnhandledErrorAsync(HttpContext context)
    {
        var failure = context.Features.Get<IExceptionHandlerFeature>();
        var error = failure?.Error;
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(IngressApp));

        // The exception handler clears the endpoint before this runs and keeps the matched one in the feature.
        Log.RequestFailed(logger, context.Request.Method, Log.RouteOf(failure?.Endpoint ?? context.GetEndpoint()), error?.GetType().Name ?? "unknown");
        if (error is MongoException or TimeoutException)
        {
            context.Response.Headers.RetryAfter = ApiErrors.OutageRetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await ApiErrors.WriteAsync(context, StatusCodes.Status503ServiceUnavailable, ErrorCodes.ServiceUnavailable,
                "The database is unavailable. Retry in a few seconds.");
            return;
        }

        await ApiErrors.WriteAsync(context, StatusCodes.Status500InternalServerError, ErrorCodes.InternalError,
            "AddOnEvents failed to handle the request. Retry later.");
    }

    /// <summary>Returns what a request that failed Bearer authentication must fix.</summary>
    private static string BearerChallengeMessage(HttpRequest request)
    {
        if (!request.Path.StartsWithSegments("/v1"))
        {
            return "The end-user token is missing, expired or invalid. Fetch a new one from the host application.";
        }

        // App credentials in a Bearer key start with the app id, which end-user tokens never do.
        if (request.Headers.Authorization.ToString().StartsWith("Bearer app_", StringComparison.Ordinal))
        {
            return "The app id or app secret in the Bearer key (appId.appSecret) is wrong.";
        }

        return "Send an end-user token or appId.appSecret as the Bearer key.";
    }
}
