using AddOnEvents.PromptWorker.Prompts;

namespace AddOnEvents.Tests.Unit;

public sealed class InFlightPromptsTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    [Fact]
    public void CancelOfRunningPromptCancelsToken()
    {
        var prompts = new InFlightPrompts(new ManualClock());
        var requestId = Guid.NewGuid();
        using var registration = prompts.Register(requestId, "app", "user", CancellationToken.None);

        bool cancelled = prompts.TryCancel(requestId, "app", "user");

        Assert.True(cancelled);
        Assert.True(registration.Token.IsCancellationRequested);
        Assert.True(registration.CancelledByUser);
    }

    [Fact]
    public void CancelBeforeRegisterCancelsRegistration()
    {
        var prompts = new InFlightPrompts(new ManualClock());
        var requestId = Guid.NewGuid();

        bool cancelledAtOnce = prompts.TryCancel(requestId, "app", "user");
        using var registration = prompts.Register(requestId, "app", "user", CancellationToken.None);

        Assert.False(cancelledAtOnce);
        Assert.True(registration.Token.IsCancellationRequested);
        Assert.True(registration.CancelledByUser);
    }

    [Theory]
    [InlineData("app", "other-user")]
    [InlineData("other-app", "user")]
    public void EarlyCancelOfOtherOwnerIsIgnored(string appId, string userId)
    {
        var prompts = new InFlightPrompts(new ManualClock());
        var requestId = Guid.NewGuid();

        prompts.TryCancel(requestId, appId, userId);
        using var registration = prompts.Register(requestId, "app", "user", CancellationToken.None);

        Assert.False(registration.Token.IsCancellationRequested);
    }

    [Fact]
    public void RememberedCancelExpires()
    {
        var clock = new ManualClock();
        var prompts = new InFlightPrompts(clock);
        var recent = Guid.NewGuid();
        var old = Guid.NewGuid();

        prompts.TryCancel(old, "app", "user");
        clock.Advance(InFlightPrompts.CancelRetention / 2);
        prompts.TryCancel(recent, "app", "user");
        clock.Advance(InFlightPrompts.CancelRetention / 2);
        using var oldRegistration = prompts.Register(old, "app", "user", CancellationToken.None);
        using var recentRegistration = prompts.Register(recent, "app", "user", CancellationToken.None);

        Assert.False(oldRegistration.CancelledByUser);
        Assert.True(recentRegistration.CancelledByUser);
        Assert.Equal(1, prompts.RememberedCancelCount);
    }

    [Fact]
    public void RememberedCancelsAreCappedOldestFirst()
    {
        var prompts = new InFlightPrompts(new ManualClock());
        var requestIds = Enumerable.Range(0, InFlightPrompts.MaxRememberedCancels + 1).Select(_ => Guid.NewGuid()).ToList();

        foreach (var requestId in requestIds)
        {
            prompts.TryCancel(requestId, "app", "user");
        }

        int remembered = prompts.RememberedCancelCount;
        using var oldest = prompts.Register(requestIds[0], "app", "user", CancellationToken.None);
        using var secondOldest = prompts.Register(requestIds[1], "app", "user", CancellationToken.None);
        using var newest = prompts.Register(requestIds[^1], "app", "user", CancellationToken.None);

        Assert.Equal(InFlightPrompts.MaxRememberedCancels, remembered);
        Assert.False(oldest.CancelledByUser);
        Assert.True(secondOldest.CancelledByUser);
        Assert.True(newest.CancelledByUser);
    }

    [Fact]
    public void CancelAfterFinishIsRemembered()
    {
        var prompts = new InFlightPrompts(new ManualClock());
        var requestId = Guid.NewGuid();
        prompts.Register(requestId, "app", "user", CancellationToken.None).Dispose();

        bool cancelled = prompts.TryCancel(requestId, "app", "user");

        Assert.False(cancelled);
        Assert.Equal(1, prompts.RememberedCancelCount);
    }

    [Fact]
    public async Task CancelRacingRegisterIsNeverLost()
    {
        var prompts = new InFlightPrompts(new ManualClock());
        int missed = 0;

        for (int i = 0; i < 2_000; i++)
        {
            var requestId = Guid.NewGuid();
            using var start = new Barrier(2);
            var register = Task.Run(() =>
            {
                start.SignalAndWait(Patience);
                return prompts.Register(requestId, "app", "user", CancellationToken.None);
            });
            var cancel = Task.Run(() =>
            {
                start.SignalAndWait(Patience);
                prompts.TryCancel(requestId, "app", "user");
            });
            await Task.WhenAll(register, cancel).WaitAsync(Patience);
            using var registration = await register;
            if (!registration.CancelledByUser)
            {
                missed++;
            }
        }

        Assert.Equal(0, missed);
    }

    /// <summary>A clock that moves only when the test advances it.</summary>
    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref _ticks, by.Ticks);
    }
}
