using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Tests.Fixtures;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Claims and results against jongodb, in a database of their own.</summary>
public sealed class PromptResultStoreTests
{
    private static readonly DateTime Now = new(2026, 12, 5, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task RenewedClaimOutlivesItsFirstRetention()
    {
        var store = NewStore();
        var requestId = Guid.NewGuid();
        var prompt = Prompt(requestId, "app_renew", "u_renew");

        var claim = await store.TryClaimAsync(prompt, "worker-1", Now, TimeSpan.FromSeconds(20), Now.AddSeconds(60), default);
        await store.RenewLeaseAsync(requestId, "worker-1", Now.AddSeconds(130), Now.AddSeconds(170), default);
        long swept = await store.DeleteExpiredAsync(Now.AddSeconds(120), default);
        var outcome = await store.FinishAsync(requestId, PromptResultStore.Completed(
            new PromptCompleted(requestId, requestId, "app_renew", "u_renew", "route", "done", "stop", new TokenUsage(1, 1, 2), Now)), default);

        Assert.Equal(ClaimOutcome.Claimed, claim.Outcome);
        Assert.Equal(0, swept);
        Assert.Equal(FinishOutcome.Stored, outcome);
    }

    [Fact]
    public async Task TakenOverClaimOutlivesItsFirstRetention()
    {
        var store = NewStore();
        var requestId = Guid.NewGuid();
        var prompt = Prompt(requestId, "app_takeover", "u_takeover");

        await store.TryClaimAsync(prompt, "worker-1", Now, TimeSpan.FromSeconds(5), Now.AddSeconds(30), default);
        var takeover = await store.TryClaimAsync(prompt, "worker-2", Now.AddSeconds(20), TimeSpan.FromSeconds(5), Now.AddSeconds(50), default);
        long swept = await store.DeleteExpiredAsync(Now.AddSeconds(40), default);

        Assert.Equal(ClaimOutcome.Claimed, takeover.Outcome);
        Assert.Equal(0, swept);
    }

    [Fact]
    public async Task CancelOfClaimedRequestReachesRenewal()
    {
        var store = NewStore();
        var requestId = Guid.NewGuid();
        var prompt = Prompt(requestId, "app_cancel", "u_cancel");

        await store.TryClaimAsync(prompt, "worker-1", Now, TimeSpan.FromSeconds(20), Now.AddSeconds(60), default);
        bool beforeCancel = await store.RenewLeaseAsync(requestId, "worker-1", Now.AddSeconds(30), Now.AddSeconds(70), default);
        await store.RecordCancelAsync(requestId, "app_cancel", "u_other", Now, Now.AddSeconds(60), default);
        bool afterOtherUser = await store.RenewLeaseAsync(requestId, "worker-1", Now.AddSeconds(30), Now.AddSeconds(70), default);
        await store.RecordCancelAsync(requestId, "app_cancel", "u_cancel", Now, Now.AddSeconds(60), default);
        bool afterOwner = await store.RenewLeaseAsync(requestId, "worker-1", Now.AddSeconds(30), Now.AddSeconds(70), default);
        var stored = await store.FindAsync(requestId, default);

        Assert.False(beforeCancel);
        Assert.False(afterOtherUser);
        Assert.True(afterOwner);
        Assert.Equal(PromptStatus.Pending, stored!.Status);
    }

    /// <summary>Returns a store in a database of its own.</summary>
    private static PromptResultStore NewStore()
    {
        MongoSetup.RegisterConventions();
        return new PromptResultStore(new MongoClient(TestEnvironment.MongoUri).GetDatabase("results" + Guid.NewGuid().ToString("N")[..12]));
    }

    private static PromptRequested Prompt(Guid requestId, string appId, string userId) =>
        new(requestId, requestId, appId, userId, "route", "gpt-4o-mini", 10, [new ChatTurn("user", "hi")], Now, Now.AddMinutes(10), Stream: false);
}
