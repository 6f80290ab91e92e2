using System.Diagnostics;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.KeyWorker;
using AddOnEvents.KeyWorker.Keys;
using AddOnEvents.Tests.Fixtures;
using AddOnEvents.Tests.Unit;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MongoDB.Driver;
using Xunit.Abstractions;

namespace AddOnEvents.Tests;

/// <summary>Master key rotation over stored keys in jongodb, through the same host the rotate-master-key command builds.</summary>
public sealed class KeyRotationTests(ITestOutputHelper output)
{
    [Fact]
    public async Task RotationRewrapsEveryKeyWithoutExposingIt()
    {
        int count = int.TryParse(Environment.GetEnvironmentVariable("ADDONEVENTS_ROTATION_KEYS"), out int n) ? n : 300;
        string database = "rot" + Guid.NewGuid().ToString("N")[..12];
        string mk1 = EnvelopeCipherTests.NewMasterKey();
        string mk2 = EnvelopeCipherTests.NewMasterKey();
        var logs = new LogCapture();
        var keys = Enumerable.Range(0, count).Select(i => $"sk-rotate-{i:D5}-{Guid.NewGuid():N}").ToList();

        using (var before = BuildHost(database, "mk1", mk1, mk2, logs))
        {
            var store = before.Services.GetRequiredService<KeyStore>();
            var cipher = before.Services.GetRequiredService<EnvelopeCipher>();
            for (int i = 0; i < count; i++)
            {
                using var key = new ProviderKey(keys[i]);
                var encrypted = await cipher.EncryptAsync(key, $"app_{i}", 1, default);
                await store.StoreCheckedAsync($"app_{i}", 1, KeyStates.Active, key.Hint(), null,
                    StoredKeyMaterial.From(encrypted, 1, "fp", "sk-...1234"), DateTime.UtcNow, default);
            }
        }

        using var after = BuildHost(database, "mk2", mk1, mk2, logs);
        var watch = Stopwatch.StartNew();
        var result = await after.Services.GetRequiredService<MasterKeyRotation>().RunAsync(default);
        watch.Stop();
        output.WriteLine($"Rotated {result.Rewrapped} keys in {watch.Elapsed.TotalSeconds:F2} s on jongodb");

        using var onlyNewKey = BuildHost(database, "mk2", null, mk2, logs);
        var store2 = onlyNewKey.Services.GetRequiredService<KeyStore>();
        var cipher2 = onlyNewKey.Services.GetRequiredService<EnvelopeCipher>();
        int readable = 0;
        foreach (int i in new[] { 0, count / 2, count - 1 })
        {
            var document = await store2.FindAsync($"app_{i}", default);
            using var key = await cipher2.DecryptAsync(document!.Material!.ToEncryptedKey(), $"app_{i}", 1, default);
            readable += key.Reveal() == keys[i] ? 1 : 0;
        }

        Assert.Equal(count, result.Rewrapped);
        Assert.Equal(0, result.Failed);
        Assert.Equal(3, readable);
        Assert.DoesNotContain(logs.Entries, entry => keys.Any(k => entry.Contains(k[10..], StringComparison.Ordinal)));
    }

    private static IHost BuildHost(string database, string current, string? mk1, string mk2, LogCapture logs) =>
        KeyWorkerApp.BuildCommandHost([], builder =>
        {
            var settings = new Dictionary<string, string?>
            {
                ["Mongo:ConnectionString"] = TestEnvironment.MongoUri,
                ["Mongo:Database"] = database,
                ["MasterKeys:CurrentKeyId"] = current,
                ["MasterKeys:Keys:mk2"] = mk2,
                ["Sealing:KeyId"] = "seal",
                ["Sealing:PrivateKey"] = new TestSecrets().SealingPrivateKey,
                ["Fingerprint:Key"] = EnvelopeCipherTests.NewMasterKey(),
                ["Upstream:BaseUrl"] = "http://127.0.0.1:9/",
            };
            if (mk1 is not null)
            {
                settings["MasterKeys:Keys:mk1"] = mk1;
            }

            builder.Configuration.AddInMemoryCollection(settings);
            builder.Logging.ClearProviders();
            builder.Logging.SetMinimumLevel(LogLevel.Trace);
            builder.Logging.AddProvider(logs);
        });
}
