using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.PromptWorker;
using AddOnEvents.PromptWorker.Prompts;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using MongoDB.Bson;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>
/// Documents that builds with a single collection per store left in the first part, or builds with fewer parts in
/// another part, moved by PromptWorker at start, against jongodb, in a database of their own.
/// </summary>
public sealed class MisplacedDocumentMoveTests
{
    private static readonly DateTime Now = new(2026, 12, 5, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task OldBuildsDocumentsAreFoundAfterMove()
    {
        MongoSetup.RegisterConventions();
        // Clients with equal settings share one connection pool, and other test classes that run at the same time
        // queue hundreds of reads in theirs, so this test's own application name gives it a pool of its own.
        var settings = MongoClientSettings.FromConnectionString(TestEnvironment.MongoUri);
        settings.ApplicationName = nameof(MisplacedDocumentMoveTests);
        var database = new MongoClient(settings).GetDatabase("moves" + Guid.NewGuid().ToString("N")[..12]);
        var usage = new UsageStore(database);
        var rates = new RateCounterStore(database);
        var results = new PromptResultStore(database);
        string appId = "app_" + Guid.NewGuid().ToString("N")[..12];
        string month = UsageStore.Month(Now);

        // Users whose monthly counter hashes to another part, and one whose counter belongs in the first part.
        string[] users = [.. Enumerable.Range(0, 200).Select(i => "user-" + i)
            .Where(user => CollectionParts.PartOf(UserMonthId(appId, user, month)) != 0).Take(6)];
        string homeUser = Enumerable.Range(0, 1000).Select(i => "home-" + i)
            .First(user => CollectionParts.PartOf(UserMonthId(appId, user, month)) == 0);
        string sharedUser = users[0];

        // The counter of sharedUser was started by a newer build too: 5 tokens and 1 request.
        await usage.AddAsync(appId, sharedUser, 5, Now, default);
        var (newDay, newMonth) = await usage.GetAppUsageAsync(appId, Now, default);

        var oldUsage = database.GetCollection<UsageCounter>(UsageStore.CollectionName);
        await oldUsage.InsertManyAsync([.. users.Append(homeUser).Select((user, i) => new UsageCounter
        {
            Id = UserMonthId(appId, user, month),
            AppId = appId,
            Scope = "user-month",
            Period = month,
            Tokens = 100 + i,
            Requests = 3,
            Reserved = user == sharedUser ? 7 : 0,
            ExpiresAt = Now.AddDays(70),
        })]);

        // Rate counters: one only in the first part, and one that a newer build counts in its own part as well.
        string[] scopes = [.. Enumerable.Range(0, 200).Select(i => "scope-" + i)
            .Where(scope => CollectionParts.PartOf(RateId(scope)) != 0).Take(2)];
        await rates.HitAsync(scopes[1], Now, default);
        await rates.HitAsync(scopes[1], Now, default);
        await database.GetCollection<UsageCounter>(RateCounterStore.CollectionName).InsertManyAsync([.. scopes.Select(scope =>
            new UsageCounter { Id = RateId(scope), Scope = scope, Period = Now.ToString("yyyyMMddHHmm"), Requests = 50, ExpiresAt = Now.AddMinutes(2) })]);

        // Results: completed results of an old build, and one whose request a newer build has claimed since.
        Guid[] requestIds = [.. Enumerable.Range(0, 200).Select(_ => Guid.NewGuid())
            .Where(id => CollectionParts.PartOf(id.ToString("N")) != 0).Take(4)];
        var claimedId = requestIds[0];
        await results.TryClaimAsync(Prompt(claimedId, appId), "worker-new", Now, TimeSpan.FromSeconds(20), Now.AddMinutes(10), default);
        await database.GetCollection<PromptResultDocument>(PromptResultStore.CollectionName).InsertManyAsync([.. requestIds.Select(id =>
            new PromptResultDocument
            {
                RequestId = id,
                AppId = appId,
                UserId = "u_old",
                Status = PromptStatus.Completed,
                Text = "old answer",
                FinishReason = "stop",
                Usage = new TokenUsage(1, 2, 3),
                LeaseOwner = "worker-old",
                CreatedAt = Now.AddMinutes(-1),
                ExpiresAt = Now.AddMinutes(10),
            })]);

        // Counters and results of a build with CollectionParts.EarlierCount parts, in the part of that layout.
        string[] earlierUsers = [.. Enumerable.Range(0, 500).Select(i => "earlier-" + i)
            .Where(user => CollectionParts.PartOf(UserMonthId(appId, user, month)) is var part && part >= CollectionParts.EarlierCount
                && part % CollectionParts.EarlierCount != 0).Take(3)];
        foreach (string user in earlierUsers)
        {
            string id = UserMonthId(appId, user, month);
            await database.GetCollection<UsageCounter>(EarlierPartName(UsageStore.CollectionName, id)).InsertOneAsync(new UsageCounter
            {
                Id = id, AppId = appId, Scope = "user-month", Period = month, Tokens = 40, Requests = 2, ExpiresAt = Now.AddDays(70),
            });
        }

        var earlierRequest = Enumerable.Range(0, 500).Select(_ => Guid.NewGuid())
            .First(id => CollectionParts.PartOf(id.ToString("N")) >= CollectionParts.EarlierCount);
        await database.GetCollection<PromptResultDocument>(EarlierPartName(PromptResultStore.CollectionName, earlierRequest.ToString("N")))
            .InsertOneAsync(new PromptResultDocument
            {
                RequestId = earlierRequest, AppId = appId, UserId = "u_earlier", Status = PromptStatus.Failed, Code = ErrorCodes.UpstreamTimeout,
                Message = "earlier failure", LeaseOwner = "worker-earlier", CreatedAt = Now.AddMinutes(-1), ExpiresAt = Now.AddMinutes(10),
            });

        var beforeMove = await Task.WhenAll(users.Concat(earlierUsers).Select(user => usage.GetUserMonthAsync(appId, user, Now, default)));

        // Several PromptWorkers that start at once all run the move.
        var usageMoved = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => new UsageStore(database).MoveMisplacedAsync(default))));
        var ratesMoved = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => new RateCounterStore(database).MoveMisplacedAsync(default))));
        var resultsMoved = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Task.Run(() => new PromptResultStore(database).MoveMisplacedAsync(default))));
        var afterFirst = await SnapshotAsync(database);
        long usageMovedAgain = await usage.MoveMisplacedAsync(default);
        long ratesMovedAgain = await rates.MoveMisplacedAsync(default);
        long resultsMovedAgain = await results.MoveMisplacedAsync(default);
        var afterSecond = await SnapshotAsync(database);

        Assert.All(beforeMove.Skip(1), Assert.Null);

        var shared = await usage.GetUserMonthAsync(appId, sharedUser, Now, default);
        Assert.Equal(105, shared!.Tokens);
        Assert.Equal(4, shared.Requests);
        Assert.Equal(7, shared.Reserved);
        for (int i = 1; i < users.Length; i++)
        {
            var counter = await usage.GetUserMonthAsync(appId, users[i], Now, default);
            Assert.Equal(100 + i, counter!.Tokens);
            Assert.Equal(3, counter.Requests);
        }

        Assert.Equal(100 + users.Length, (await usage.GetUserMonthAsync(appId, homeUser, Now, default))!.Tokens);
        foreach (string user in earlierUsers)
        {
            var counter = await usage.GetUserMonthAsync(appId, user, Now, default);
            Assert.Equal((40, 2), (counter!.Tokens, counter.Requests));
        }

        var earlierResult = await results.FindAsync(earlierRequest, default);
        Assert.Equal((PromptStatus.Failed, "earlier failure"), (earlierResult!.Status, earlierResult.Message));
        Assert.Equal((newDay!.Tokens, newMonth!.Tokens), await AppTokensAsync(usage, appId));

        Assert.Equal(51, await rates.HitAsync(scopes[0], Now, default));
        Assert.Equal(3, await rates.HitAsync(scopes[1], Now, default));

        var claimed = await results.FindAsync(claimedId, default);
        Assert.Equal(PromptStatus.Pending, claimed!.Status);
        Assert.Equal("worker-new", claimed.LeaseOwner);
        foreach (var id in requestIds.Skip(1))
        {
            var result = await results.FindAsync(id, default);
            Assert.Equal(PromptStatus.Completed, result!.Status);
            Assert.Equal("old answer", result.Text);
            Assert.Equal(3, result.Usage!.TotalTokens);
        }

        Assert.Equal(users.Length + earlierUsers.Length, usageMoved.Sum());
        Assert.Equal(scopes.Length, ratesMoved.Sum());
        Assert.Equal(requestIds.Length + 1, resultsMoved.Sum());

        foreach (string name in new[] { UsageStore.CollectionName, RateCounterStore.CollectionName, PromptResultStore.CollectionName })
        {
            foreach (var (partName, part) in CollectionParts.NamesOf(name).Take(CollectionParts.EarlierCount).Select((partName, part) => (partName, part)))
            {
                var documents = await database.GetCollection<BsonDocument>(partName).Find(FilterDefinition<BsonDocument>.Empty).ToListAsync();
                Assert.All(documents, document => Assert.Equal(part, CollectionParts.PartOf(IdText(document["_id"]))));
            }
        }

        Assert.Equal(0, usageMovedAgain);
        Assert.Equal(0, ratesMovedAgain);
        Assert.Equal(0, resultsMovedAgain);
        Assert.Equal(afterFirst, afterSecond);
    }

    [Fact]
    public async Task MoveStartsBeforeBus()
    {
        await using var app = PromptWorkerApp.Build([], builder => builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Mongo:ConnectionString"] = TestEnvironment.MongoUri,
            ["RabbitMq:Host"] = "127.0.0.1",
            ["RabbitMq:Port"] = TestEnvironment.RabbitMqPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Upstream:BaseUrl"] = "http://127.0.0.1:1/",
        }));

        // The host starts hosted services one after another in this order, and MassTransit's starts the consumers.
        var started = app.Services.GetServices<IHostedService>().Select(service => service.GetType().Name).ToList();

        int mover = started.IndexOf(nameof(MisplacedDocumentMover));
        int bus = started.IndexOf("MassTransitHostedService");
        Assert.InRange(mover, 0, started.Count);
        Assert.InRange(bus, mover + 1, started.Count);
        Assert.False(app.Services.GetRequiredService<IOptions<HostOptions>>().Value.ServicesStartConcurrently);
    }

    private static string UserMonthId(string appId, string userId, string month) => $"{appId}|user|{userId}|{month}";

    /// <summary>Returns the name of the part that a build with <see cref="CollectionParts.EarlierCount"/> parts kept the id in.</summary>
    private static string EarlierPartName(string name, string id) =>
        CollectionParts.NamesOf(name).ElementAt(CollectionParts.PartOf(id) % CollectionParts.EarlierCount);

    private static string RateId(string scope) => scope + "|" + Now.ToString("yyyyMMddHHmm");

    private static string IdText(BsonValue id) => id.IsString ? id.AsString : id.AsGuid.ToString("N");

    private static async Task<(long Day, long Month)> AppTokensAsync(UsageStore usage, string appId)
    {
        var (day, month) = await usage.GetAppUsageAsync(appId, Now, default);
        return (day!.Tokens, month!.Tokens);
    }

    /// <summary>Returns every document of every part of the three stores, as sorted JSON, keyed by collection and part.</summary>
    private static async Task<Dictionary<string, List<string>>> SnapshotAsync(IMongoDatabase database)
    {
        var snapshot = new Dictionary<string, List<string>>();
        foreach (string name in new[] { UsageStore.CollectionName, RateCounterStore.CollectionName, PromptResultStore.CollectionName })
        {
            int part = 0;
            foreach (string partName in CollectionParts.NamesOf(name))
            {
                var documents = await database.GetCollection<BsonDocument>(partName).Find(FilterDefinition<BsonDocument>.Empty).ToListAsync();
                snapshot[name + "#" + part++] = [.. documents.Select(document => document.ToJson()).Order(StringComparer.Ordinal)];
            }
        }

        return snapshot;
    }

    private static PromptRequested Prompt(Guid requestId, string appId) =>
        new(requestId, requestId, appId, "u_new", "route", "gpt-4o-mini", 10, [new ChatTurn("user", "hi")], Now, Now.AddMinutes(10), Stream: false);
}
