namespace AddOnEvents.Ingress;

/// <summary>Ingress log messages: ids and codes only, never keys, tokens, prompts or answers.</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = 1001, Level = LogLevel.Information, Message = "Accepted key registration of app {AppId} version {KeyVersion}")]
    public static partial void KeyRegistrationAccepted(ILogger logger, string appId, long keyVersion);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information, Message = "Deleted key of app {AppId}: {Deleted}")]
    public static partial void KeyDeleted(ILogger logger, string appId, bool deleted);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Warning, Message = "Broker did not confirm a {MessageType} publish: {ExceptionType}")]
    public static partial void PublishFailed(ILogger logger, string messageType, string exceptionType);

    [LoggerMessage(EventId = 1013, Level = LogLevel.Information, Message = "Rejected a hub request from a page of an origin that is not allowed")]
    public static partial void HubOriginRejected(ILogger logger);

    [LoggerMessage(EventId = 1015, Level = LogLevel.Information,
        Message = "Closed {Count} hub connections whose app secret was revoked")]
    public static partial void RevokedConnectionsClosed(ILogger logger, int count);

    [LoggerMessage(EventId = 1016, Level = LogLevel.Warning, Message = "Checking open hub connections for revoked secrets failed with {ExceptionType}")]
    public static partial void ConnectionSweepFailed(ILogger logger, string exceptionType);

    [LoggerMessage(EventId = 1017, Level = LogLevel.Warning, Message = "Storing a cancel of app {AppId} failed with {ExceptionType}, so only its broadcast can stop the request")]
    public static partial void CancelNotRecorded(ILogger logger, string appId, string exceptionType);

    [LoggerMessage(EventId = 1020, Level = LogLevel.Warning,
        Message = "Lost the cancel of request {RequestId} of app {AppId}: it was neither stored nor confirmed by the broker")]
    public static partial void CancelLost(ILogger logger, string appId, Guid requestId);

    [LoggerMessage(EventId = 1014, Level = LogLevel.Information,
        Message = "Closed a new hub connection of app {AppId}: its user already has {Limit} connections open here")]
    public static partial void TooManyConnections(ILogger logger, string appId, int limit);

    [LoggerMessage(EventId = 1012, Level = LogLevel.Warning,
        Message = "Gave up pushing {Method} after {Seconds} s because a connection of its user does not read; closed {Connections} connections of the user")]
    public static partial void PushTimedOut(ILogger logger, string method, double seconds, int connections);

    [LoggerMessage(EventId = 1011, Level = LogLevel.Information,
        Message = "Erased an end user of app {AppId}: {UsageCounters} usage counters, {Results} results")]
    public static partial void UserErased(ILogger logger, string appId, long usageCounters, long results);

    [LoggerMessage(EventId = 1010, Level = LogLevel.Debug, Message = "Rejected a {MessageType} publish at once because the broker is down")]
    public static partial void PublishSkipped(ILogger logger, string messageType);

    [LoggerMessage(EventId = 1004, Level = LogLevel.Information, Message = "Accepted request {RequestId} of app {AppId}")]
    public static partial void PromptAccepted(ILogger logger, Guid requestId, string appId);

    [LoggerMessage(EventId = 1005, Level = LogLevel.Information, Message = "Created app {AppId}")]
    public static partial void AppCreated(ILogger logger, string appId);

    [LoggerMessage(EventId = 1009, Level = LogLevel.Information, Message = "Removed app {AppId} with its key, usage, results and user controls")]
    public static partial void AppRemoved(ILogger logger, string appId);

    [LoggerMessage(EventId = 1006, Level = LogLevel.Debug, Message = "Delivered {Outcome} of request {RequestId} to its user's connections")]
    public static partial void ResultDelivered(ILogger logger, string outcome, Guid requestId);

    [LoggerMessage(EventId = 1008, Level = LogLevel.Information, Message = "Dropped a second final result of request {RequestId}")]
    public static partial void DuplicateResultDropped(ILogger logger, Guid requestId);

    [LoggerMessage(EventId = 1007, Level = LogLevel.Error, Message = "{Method} request to {Route} failed with {ExceptionType}")]
    public static partial void RequestFailed(ILogger logger, string method, string route, string exceptionType);

    /// <summary>
    /// Returns the route template of the endpoint that matched a request, for log lines in place of the request path,
    /// because the path contains host user ids and whatever else a caller typed into it.
    /// </summary>
    public static string RouteOf(Endpoint? endpoint) => (endpoint as RouteEndpoint)?.RoutePattern.RawText ?? "(no matched route)";

    [LoggerMessage(EventId = 1018, Level = LogLevel.Debug, Message = "Rejected a {HubMethod} hub call")]
    public static partial void HubCallRejected(ILogger logger, string hubMethod);

    [LoggerMessage(EventId = 1019, Level = LogLevel.Error, Message = "{HubMethod} hub call failed with {ExceptionType}")]
    public static partial void HubCallFailed(ILogger logger, string hubMethod, string exceptionType);
}

/// <summary>Log category of the minimal API endpoints, which live in static classes.</summary>
public sealed class ApiLogCategory
{
    private ApiLogCategory()
    {
    }
}
