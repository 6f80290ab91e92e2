using Microsoft.AspNetCore.SignalR;

namespace AddOnEvents.Ingress.Hubs;

/// <summary>
/// Logs failed hub calls in place of SignalR's dispatcher, which logs every exception at Error level, including a
/// <see cref="HubException"/> that rejects bad input. Rejections are logged at Debug, and other failures at Error
/// with the exception type only, because an exception message may quote the caller's input.
/// </summary>
public sealed class HubFailureLogger(ILogger<HubFailureLogger> logger) : IHubFilter
{
    /// <summary>
    /// The dispatcher's category, which Ingress silences. This filter logs the failures that the dispatcher logs at
    /// Error, and its other lines are Debug or Trace, except one for streaming hub methods, which this hub does not have.
    /// </summary>
    public const string DispatcherCategory = "Microsoft.AspNetCore.SignalR.Internal.DefaultHubDispatcher";

    public async ValueTask<object?> InvokeMethodAsync(
        HubInvocationContext invocationContext, Func<HubInvocationContext, ValueTask<object?>> next)
    {
        try
        {
            return await next(invocationContext);
        }
        catch (HubException)
        {
            Log.HubCallRejected(logger, invocationContext.HubMethodName);
            throw;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.HubCallFailed(logger, invocationContext.HubMethodName, ex.GetType().Name);
            throw;
        }
    }
}
