using System.Security.Cryptography;
using AddOnEvents.Ingress.Apps;
using AddOnEvents.Ingress.Crypto;
using AddOnEvents.Tests.Fixtures;
using Microsoft.Extensions.Caching.Memory;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using MongoDB.Driver;
using MongoDB.Driver.Core.Events;

namespace AddOnEvents.Tests;

public sealed class AppCacheTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task ChangeOvertakingReadIsNotCached()
    {
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        bool hold = false;
        var settings = MongoClientSettings.FromConnectionString(TestEnvironment.MongoUri);

        // Holds the next read of an app once its reply has arrived, so a change can be written before the reply is used.
        settings.ClusterConfigurator = cluster => cluster.Subscribe<CommandSucceededEvent>(command =>
        {
            if (command.CommandName == "find" && command.Reply["cursor"]["ns"].AsString.EndsWith(".apps", StringComparison.Ordinal)
                && Volatile.Read(ref hold))
            {
                Volatile.Write(ref hold, false);
                entered.Set();
                release.Wait(Patience);
            }
        });
        var database = new MongoClient(settings).GetDatabase("appcache" + Guid.NewGuid().ToString("N")[..12]);
        using var cache = new MemoryCache(new MemoryCacheOptions());
        var store = new AppStore(database, cache, TimeProvider.System, new WebhookSecretCipher(RandomNumberGenerator.GetBytes(32)),
            Options.Create(new NewAppLimits()), NullLogger<AppStore>.Instance);
        var (appId, _) = await store.CreateAsync("cache race", CancellationToken.None);

        Volatile.Write(ref hold, true);
        var overtaken = Task.Run(() => store.FindCachedAsync(appId, CancellationToken.None));
        Assert.True(entered.Wait(Patience));
        await store.SetActivationAsync(appId, true, CancellationToken.None);
        release.Set();
        var readBefore = await overtaken;
        var readAfter = await store.FindCachedAsync(appId, CancellationToken.None);

        Assert.False(readBefore!.AddonActive);
        Assert.True(readAfter!.AddonActive);
    }
}
