using AddOnEvents.Ingress.Options;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.Ingress.Hosting;

/// <summary>
/// Publishes a message and waits for the broker's confirm, or reports failure after the publish timeout. Once a
/// publish has failed and the bus is still not healthy, further publishes fail at once instead of each waiting out
/// the timeout: during a broker outage callers get their 503 straight away. One publish at a time, at most every
/// <see cref="TrialInterval"/>, still goes to the broker to find out whether it is back. While the bus reports
/// anything but healthy, a publish waits at most <see cref="TrialInterval"/> for its confirm.
/// </summary>
public sealed class ConfirmedPublisher(
    IBus bus, IBusControl busControl, IOptions<PromptOptions> options, TimeProvider clock, ILogger<ConfirmedPublisher> logger)
{
    /// <summary>Interval between trial publishes while the broker is known to be down.</summary>
    public static readonly TimeSpan TrialInterval = TimeSpan.FromSeconds(2);

    private readonly Lock _gate = new();
    private bool _down;
    private bool _trialRunning;
    private DateTimeOffset _nextTrial;

    /// <summary>Publishes the message and returns false when the broker did not confirm in time or is known to be down.</summary>
    /// <remarks>
    /// A caller that goes away does not cancel the publish. Once the message may have reached the broker, a cancel
    /// only hides whether it did, and MassTransit logs every cancelled send as a fault at Error level.
    /// </remarks>
    /// <param name="timeToLive">Lets the broker drop the message once no caller waits for it.</param>
    public async Task<bool> PublishAsync<T>(T message, TimeSpan? timeToLive = null)
        where T : class
    {
        if (!TryEnter(out bool trial))
        {
            Log.PublishSkipped(logger, typeof(T).Name);
            return false;
        }

        bool? succeeded = null;
        using var timeout = new CancellationTokenSource();
        // A trial while the broker is known to be down waits no longer than the interval between trials, because
        // the request that carries it would otherwise be the one that waits out the whole timeout. A publish while the
        // bus reports a lost connection gets the same cap, because a reachable broker confirms within milliseconds.
        var limit = TimeSpan.FromSeconds(options.Value.PublishTimeoutSeconds);
        bool doubtful = trial || busControl.CheckHealth().Status != BusHealthStatus.Healthy;
        timeout.CancelAfter(doubtful && TrialInterval < limit ? TrialInterval : limit);
        try
        {
            await bus.Publish(message, publish =>
            {
                if (timeToLive is { } ttl)
                {
                    publish.TimeToLive = ttl;
                }
            }, timeout.Token);
            succeeded = true;
            return true;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            succeeded = false;
            Log.PublishFailed(logger, typeof(T).Name, ex.GetType().Name);
            return false;
        }
        finally
        {
            Finish(trial, succeeded);
        }
    }

    private bool TryEnter(out bool trial)
    {
        trial = false;
        lock (_gate)
        {
            if (!_down)
            {
                return true;
            }

            // The bus reconnects by itself. Once it reports healthy, publishes go to the broker again.
            if (busControl.CheckHealth().Status == BusHealthStatus.Healthy)
            {
                _down = false;
                return true;
            }

            if (_trialRunning || clock.GetUtcNow() < _nextTrial)
            {
                return false;
            }

            _trialRunning = true;
            trial = true;
            return true;
        }
    }

    private void Finish(bool trial, bool? succeeded)
    {
        lock (_gate)
        {
            if (trial)
            {
                _trialRunning = false;
            }

            if (succeeded == true)
            {
                _down = false;
            }
            else if (succeeded == false)
            {
                _down = true;
                _nextTrial = clock.GetUtcNow() + TrialInterval;
            }
        }
    }
}
