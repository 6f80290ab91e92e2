using AddOnEvents.Common.Storage;
using AddOnEvents.Tests.Fixtures;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Usage counters written by many concurrent completions, against jongodb, in a database of their own.</summary>
public sealed class UsageStoreTests
{
    private static readonly DateTime Now = new(2026, 12, 4, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task ConcurrentAnswersAreAllCounted()
    {
        var store = new UsageStore(NewDatabase());
        string appId = "app_" + Guid.NewGuid().ToString("N")[..12];
        string[] users = ["u1", "u2", "u3", "u4", "u5"];

        await Task.WhenAll(Enumerable.Range(0, 200).Select(i => Task.Run(() => store.AddAsync(appId, users[i % users.Length], i + 1, Now, default))));

        var (day, month) = await store.GetAppUsageAsync(appId, Now, default);
        Assert.Equal(200 * 201 / 2, day!.Tokens);
        Assert.Equal(200, day.Requests);
        Assert.Equal(200 * 201 / 2, month!.Tokens);
        Assert.Equal(200, month.Requests);
        for (int u = 0; u < users.Length; u++)
        {
            var user = await store.GetUserMonthAsync(appId, users[u], Now, default);
            long expected = Enumerable.Range(0, 200).Where(i => i % users.Length == u).Sum(i => (long)i + 1);
            Assert.Equal(expected, user!.Tokens);
            Assert.Equal(40, user.Requests);
        }
    }

    [Fact]
    public async Task ReadBackTotalsIncludeEachAnswer()
    {
        var store = new UsageStore(NewDatabase());
        string appId = "app_" + Guid.NewGuid().ToString("N")[..12];

        var sequential = new List<long>();
        for (int i = 0; i < 3; i++)
        {
            sequential.Add(await store.AddAndReadUserAsync(appId, "reader", 10, Now, default));
        }

        var concurrent = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => Task.Run(() => store.AddAndReadUserAsync(appId, "reader", 10, Now, default))));
        await store.AddAsync(appId, "other", 7, Now, default);

        Assert.Equal([10L, 20L, 30L], sequential);
        Assert.All(concurrent, total => Assert.InRange(total, 40, 530));
        Assert.Contains(530, concurrent);
        Assert.Equal(530, (await store.GetUserMonthAsync(appId, "reader", Now, default))!.Tokens);
        var (day, _) = await store.GetAppUsageAsync(appId, Now, default);
        Assert.Equal(537, day!.Tokens);
        Assert.Equal(54, day.Requests);
    }

    [Fact]
    public async Task CountersInEveryPartAreFoundAndDeleted()
    {
        var database = NewDatabase();
        var store = new UsageStore(database);
        string appId = "app_" + Guid.NewGuid().ToString("N")[..12];
        string[] users = [.. Enumerable.Range(0, 40).Select(i => "user-" + i)];
        await Task.WhenAll(users.Select(user => store.AddAsync(appId, user, 5, Now, default)));

        var perPart = await Task.WhenAll(CollectionParts.NamesOf(UsageStore.CollectionName)
            .Select(name => database.GetCollection<UsageCounter>(name).CountDocumentsAsync(FilterDefinition<UsageCounter>.Empty)));
        var found = await Task.WhenAll(users.Select(user => store.GetUserMonthsAsync(appId, user, default)));
        long erased = await store.DeleteUserAsync(appId, users[0], default);
        await store.DeleteAppAsync(appId, default);
        var left = await Task.WhenAll(users.Select(user => store.GetUserMonthAsync(appId, user, Now, default)));

        Assert.True(perPart.Count(count => count > 0) > 4, string.Join(",", perPart));
        Assert.Equal(users.Length + 2, perPart.Sum());
        Assert.All(found, counters => Assert.Equal(5, Assert.Single(counters).Tokens));
        Assert.Equal(1, erased);
        Assert.All(left, Assert.Null);
        Assert.Equal((null, null), await store.GetAppUsageAsync(appId, Now, default));
    }

    [Theory]
    [InlineData("app_1|day|2026-12-04", 15)]
    [InlineData("b3f1c2d4e5f60718293a4b5c6d7e8f90", 38)]
    public void PartOfIdIsFixed(string id, int part)
    {
        // Documents are found by the part their id hashes to, so the hash must not change between processes or builds.
        // The values were computed apart from this code, by a script of the same FNV-1a hash.
        Assert.Equal(part, CollectionParts.PartOf(id));
    }

    [Fact]
    public async Task CountReportsCreatedCounters()
    {
        var store = new UsageStore(NewDatabase());
        string appId = "app_" + Guid.NewGuid().ToString("N")[..12];

        bool first = await store.AddAsync(appId, "known", 5, Now, default);
        bool again = await store.AddAsync(appId, "known", 5, Now, default);
        bool appOnly = await store.AddAppAsync(appId, 5, Now, default);

        // Whether or not the two calls share one write, only the new user's counter is created.
        var known = store.AddAsync(appId, "known", 5, Now, default);
        var newcomer = store.AddAsync(appId, "newcomer", 5, Now, default);
        bool[] shared = await Task.WhenAll(known, newcomer);

        Assert.True(first);
        Assert.False(again);
        Assert.False(appOnly);
        Assert.False(shared[0]);
        Assert.True(shared[1]);
    }

    [Fact]
    public async Task UnreachableDatabaseFailsEveryWaitingCaller()
    {
        // Port 1 on loopback has no listener, so every write fails once server selection gives up.
        var settings = MongoClientSettings.FromConnectionString("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500");
        var store = new UsageStore(new MongoClient(settings).GetDatabase("unreachable"));

        var calls = Enumerable.Range(0, 5).Select(i => store.AddAsync("app_x", "u" + i, 1, Now, default)).ToList();

        foreach (var call in calls)
        {
            await Assert.ThrowsAsync<TimeoutException>(() => call);
        }
    }

    [Fact]
    public void CountersUseCamelCaseNames()
    {
        var map = MongoDB.Bson.Serialization.BsonClassMap.LookupClassMap(typeof(UsageCounter));

        Assert.Equal("reserved", map.GetMemberMap(nameof(UsageCounter.Reserved)).ElementName);
        Assert.Equal("appId", map.GetMemberMap(nameof(UsageCounter.AppId)).ElementName);
    }

    private static IMongoDatabase NewDatabase() =>
        new MongoClient(TestEnvironment.MongoUri).GetDatabase("usage" + Guid.NewGuid().ToString("N")[..12]);
}
