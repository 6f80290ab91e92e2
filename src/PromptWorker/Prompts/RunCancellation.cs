namespace AddOnEvents.PromptWorker.Prompts;

/// <summary>
/// The cancellation of one run of a prompt, apart from a user's cancel. MassTransit 8.5.12 cancels a delivery's
/// <c>ConsumeContext.CancellationToken</c> when the channel shuts down because the broker connection dropped. Its
/// <c>ConsumerAgent</c> also cancels it when a stopping endpoint's consumers outlast the stop timeout. Only the
/// second must end the run: after a dropped connection the upstream call goes on, its result is stored, and the
/// redelivered message publishes that stored result instead of calling the upstream again.
/// </summary>
public sealed class RunCancellation : IDisposable
{
    private readonly CancellationTokenSource _source = new();
    private readonly CancellationTokenRegistration _onDelivery;
    private readonly CancellationTokenRegistration _onStopping;
    private readonly CancellationToken _delivery;
    private readonly CancellationToken _stopping;
    private int _deliveryLost;

    /// <param name="deliveryLost">Called once, on the thread that cancels the delivery, when that happens while the worker keeps running.</param>
    /// <param name="delivery">The token of the delivery that runs the prompt.</param>
    /// <param name="stopping">The token that the host cancels when the worker starts to stop.</param>
    public RunCancellation(Action deliveryLost, CancellationToken delivery, CancellationToken stopping)
    {
        _delivery = delivery;
        _stopping = stopping;
        _onDelivery = delivery.Register(() =>
        {
            // The host cancels its stopping token before it stops the bus, so a delivery cancelled during a stop
            // finds it cancelled already.
            if (_stopping.IsCancellationRequested)
            {
                Cancel();
            }
            else if (Interlocked.Exchange(ref _deliveryLost, 1) == 0)
            {
                deliveryLost();
            }
        });
        _onStopping = stopping.Register(() =>
        {
            // A run whose delivery is already gone gets no more time from MassTransit's stop timeout.
            if (_delivery.IsCancellationRequested)
            {
                Cancel();
            }
        });
    }

    /// <summary>Token cancelled only when the worker stops, so a dropped broker connection leaves the run going.</summary>
    public CancellationToken Token => _source.Token;

    // Dispose removes both callbacks, waiting for one that runs, before it disposes the source.
    private void Cancel() => _source.Cancel();

    public void Dispose()
    {
        _onDelivery.Dispose();
        _onStopping.Dispose();
        _source.Dispose();
    }
}
