using AddOnEvents.Common.Storage;
using AddOnEvents.Tests.Fixtures;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Tokens reserved against quotas by concurrent prompts, against jongodb, in a database of their own.</summary>
public sealed class TokenReservationStoreTests
{
    private static readonly DateTime Now = new(2026, 12, 5, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task ConcurrentPromptsCannotShareTheLastRoom()
    {
        var (usage, reservations) = NewStores();
        string appId = NewAppId();

        // Room for 100 tokens and 30 per prompt: the reservations at 0, 30, 60 and 90 pass, and every later one finds 120 reserved.
        var outcomes = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Task.Run(() =>
            reservations.TryReserveAsync(Guid.NewGuid(), appId, "u1", [UsageStore.AppDayLimit(appId, Now, 100, 0)], 30, Now.AddHours(1)))));

        Assert.Equal(4, outcomes.Count(full => full is null));
        Assert.Equal(120, (await usage.GetAppUsageAsync(appId, Now, default)).Day!.Reserved);
    }

    [Fact]
    public async Task ReservationIsReleasedOnce()
    {
        var (usage, reservations) = NewStores();
        string appId = NewAppId();
        var first = Guid.NewGuid();
        var second = Guid.NewGuid();
        QuotaCounter[] limits = [UsageStore.AppDayLimit(appId, Now, 1_000, 0), UsageStore.UserMonthLimit(appId, "u1", Now, 500, 0)];

        Assert.Null(await reservations.TryReserveAsync(first, appId, "u1", limits, 40, Now.AddHours(1)));
        Assert.Null(await reservations.TryReserveAsync(second, appId, "u1", limits, 25, Now.AddHours(1)));
        await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => reservations.ReleaseAsync(first, default)));

        Assert.Equal(25, (await usage.GetAppUsageAsync(appId, Now, default)).Day!.Reserved);
        Assert.Equal(25, (await usage.GetUserMonthAsync(appId, "u1", Now, default))!.Reserved);
    }

    [Fact]
    public async Task FullSecondLimitUndoesTheFirst()
    {
        var (usage, reservations) = NewStores();
        string appId = NewAppId();
        var day = UsageStore.AppDayLimit(appId, Now, 1_000, 0);

        Assert.Null(await reservations.TryReserveAsync(Guid.NewGuid(), appId, "u1", [UsageStore.UserMonthLimit(appId, "u1", Now, 50, 0)], 60, Now.AddHours(1)));
        var full = await reservations.TryReserveAsync(Guid.NewGuid(), appId, "u1", [day, UsageStore.UserMonthLimit(appId, "u1", Now, 50, 0)], 10, Now.AddHours(1));

        Assert.Equal("user-month", full?.Counter.Scope);
        Assert.Equal(0, (await usage.GetAppUsageAsync(appId, Now, default)).Day!.Reserved);
        Assert.Equal(60, (await usage.GetUserMonthAsync(appId, "u1", Now, default))!.Reserved);
        Assert.Single(await reservations.FindUserAsync(appId, "u1", default));
    }

    [Fact]
    public async Task CountedTokensLeaveLessRoom()
    {
        var (usage, reservations) = NewStores();
        string appId = NewAppId();
        await usage.AddAsync(appId, "u1", 90, Now, default);

        var (counted, _) = await usage.GetAppUsageAsync(appId, Now, default);
        var first = await reservations.TryReserveAsync(Guid.NewGuid(), appId, "u1", [UsageStore.AppDayLimit(appId, Now, 100, counted!.Tokens)], 30, Now.AddHours(1));
        var second = await reservations.TryReserveAsync(Guid.NewGuid(), appId, "u1", [UsageStore.AppDayLimit(appId, Now, 100, counted.Tokens)], 30, Now.AddHours(1));

        Assert.Null(first);
        Assert.NotNull(second);
        var (day, _) = await usage.GetAppUsageAsync(appId, Now, default);
        Assert.Equal(90, day!.Tokens);
        Assert.Equal(30, day.Reserved);
    }

    [Fact]
    public async Task ExpiredAndErasedReservationsAreReleased()
    {
        var (usage, reservations) = NewStores();
        string appId = NewAppId();
        var day = UsageStore.AppDayLimit(appId, Now, 1_000, 0);
        await reservations.TryReserveAsync(Guid.NewGuid(), appId, "crashed", [day], 100, Now.AddMinutes(1));
        await reservations.TryReserveAsync(Guid.NewGuid(), appId, "erased", [day], 20, Now.AddHours(1));
        await reservations.TryReserveAsync(Guid.NewGuid(), appId, "erased", [day], 20, Now.AddHours(1));
        await reservations.TryReserveAsync(Guid.NewGuid(), appId, "running", [day], 7, Now.AddHours(1));

        long expired = await reservations.ReleaseExpiredAsync(Now.AddMinutes(2), default);
        long erased = await reservations.ReleaseUserAsync(appId, "erased", default);

        Assert.Equal(1, expired);
        Assert.Equal(2, erased);
        Assert.Equal(7, (await usage.GetAppUsageAsync(appId, Now, default)).Day!.Reserved);
        Assert.Single(await reservations.FindUserAsync(appId, "running", default));
        Assert.Empty(await reservations.FindUserAsync(appId, "erased", default));
    }

    private static string NewAppId() => "app_" + Guid.NewGuid().ToString("N")[..12];

    private static (UsageStore Usage, TokenReservationStore Reservations) NewStores()
    {
        MongoSetup.RegisterConventions();
        var database = new MongoClient(TestEnvironment.MongoUri).GetDatabase("reservations" + Guid.NewGuid().ToString("N")[..12]);
        var usage = new UsageStore(database);
        return (usage, new TokenReservationStore(database, usage));
    }
}
