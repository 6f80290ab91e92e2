using AddOnEvents.PromptWorker.Consumers;

namespace AddOnEvents.Tests.Unit;

public sealed class LeaseRenewalTests
{
    [Fact]
    public async Task RenewalContinuesAfterDatabaseFailure()
    {
        int calls = 0;
        var failures = new List<Exception>();
        var renewedAfterFailure = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (new LeaseRenewal(TimeSpan.FromMilliseconds(20), TimeProvider.System,
            _ =>
            {
                int call = Interlocked.Increment(ref calls);
                if (call == 1)
                {
                    throw new TimeoutException("The database did not answer.");
                }

                renewedAfterFailure.TrySetResult();
                return Task.CompletedTask;
            },
            ex =>
            {
                lock (failures)
                {
                    failures.Add(ex);
                }
            },
            CancellationToken.None))
        {
            await renewedAfterFailure.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }

        Assert.True(Volatile.Read(ref calls) >= 2);
        Assert.IsType<TimeoutException>(Assert.Single(failures));
    }

    [Fact]
    public async Task DisposeStopsRenewals()
    {
        int calls = 0;
        var first = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (new LeaseRenewal(TimeSpan.FromMilliseconds(20), TimeProvider.System,
            _ =>
            {
                Interlocked.Increment(ref calls);
                first.TrySetResult();
                return Task.CompletedTask;
            },
            _ => { },
            CancellationToken.None))
        {
            await first.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }

        int afterDispose = Volatile.Read(ref calls);
        await Task.Delay(200);

        Assert.Equal(afterDispose, Volatile.Read(ref calls));
    }
}
