using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.Tests.Fixtures;
using MongoDB.Driver;

namespace AddOnEvents.Tests;

/// <summary>Rejections of a stored key racing the registration of its replacement, against jongodb.</summary>
public sealed class KeyStoreTests
{
    private const string AppId = "app_keys";
    private static readonly DateTime Now = new(2026, 12, 5, 12, 0, 0, DateTimeKind.Utc);

    [Fact]
    public async Task RejectionBeforeReplacementRemovesKey()
    {
        var store = NewStore();
        await StoreAsync(store, 1, KeyStates.Active);

        await store.MarkRejectedAsync(AppId, 1, ErrorCodes.UpstreamAuthFailed, Now, default);
        var rejected = await store.FindAsync(AppId, default);
        await store.MarkPendingAsync(AppId, 2, Hint(2), Now, default);
        var pending = await store.FindAsync(AppId, default);
        await StoreAsync(store, 2, KeyStates.Active);
        var replaced = await store.FindAsync(AppId, default);

        Assert.Equal(KeyStates.Invalid, rejected!.State);
        Assert.Null(rejected.Material);
        Assert.False(rejected.HasUsableKey());
        Assert.Equal(KeyStates.Pending, pending!.State);
        Assert.False(pending.HasUsableKey());
        Assert.True(pending.IsRejectedKeyPendingReplacement());
        Assert.True(replaced!.HasUsableKey());
        Assert.Equal(2, replaced.Material!.Version);
    }

    [Fact]
    public async Task RejectionDuringReplacementRemovesKey()
    {
        var store = NewStore();
        await StoreAsync(store, 1, KeyStates.Active);

        await store.MarkPendingAsync(AppId, 2, Hint(2), Now, default);
        await store.MarkRejectedAsync(AppId, 1, ErrorCodes.UpstreamAuthFailed, Now, default);
        var pending = await store.FindAsync(AppId, default);
        await StoreAsync(store, 2, KeyStates.Active);
        var replaced = await store.FindAsync(AppId, default);

        Assert.Equal(KeyStates.Pending, pending!.State);
        Assert.Equal(2, pending.Version);
        Assert.False(pending.HasUsableKey());
        Assert.True(pending.IsRejectedKeyPendingReplacement());
        Assert.Equal(KeyStates.Active, replaced!.State);
        Assert.True(replaced.HasUsableKey());
        Assert.Equal(2, replaced.Material!.Version);
    }

    [Fact]
    public async Task LateRejectionKeepsStoredReplacement()
    {
        var store = NewStore();
        await StoreAsync(store, 1, KeyStates.Active);
        await store.MarkPendingAsync(AppId, 2, Hint(2), Now, default);
        await StoreAsync(store, 2, KeyStates.Active);

        await store.MarkRejectedAsync(AppId, 1, ErrorCodes.UpstreamAuthFailed, Now, default);
        var document = await store.FindAsync(AppId, default);

        Assert.Equal(KeyStates.Active, document!.State);
        Assert.True(document.HasUsableKey());
        Assert.Equal(2, document.Material!.Version);
        Assert.Null(document.RejectedVersion);
    }

    [Fact]
    public async Task RejectedReplacementAfterRejectionServesNothing()
    {
        var store = NewStore();
        await StoreAsync(store, 1, KeyStates.Active);
        await store.MarkRejectedAsync(AppId, 1, ErrorCodes.UpstreamAuthFailed, Now, default);
        await store.MarkPendingAsync(AppId, 2, Hint(2), Now, default);

        await store.StoreCheckedAsync(AppId, 2, KeyStates.Invalid, Hint(2), ErrorCodes.UpstreamAuthFailed, material: null, Now, default);
        var document = await store.FindAsync(AppId, default);

        Assert.Equal(KeyStates.Invalid, document!.State);
        Assert.Null(document.Material);
        Assert.False(document.HasUsableKey());
    }

    [Fact]
    public async Task InvalidRecheckRemovesKey()
    {
        var store = NewStore();
        await StoreAsync(store, 1, KeyStates.Unverified);
        var unverified = await store.FindAsync(AppId, default);

        bool stored = await store.StoreRecheckedAsync(unverified!, KeyStates.Invalid, ErrorCodes.UpstreamAuthFailed, 1, null, Now, default);
        await store.MarkPendingAsync(AppId, 2, Hint(2), Now, default);
        var pending = await store.FindAsync(AppId, default);

        Assert.True(stored);
        Assert.False(pending!.HasUsableKey());
        Assert.True(pending.IsRejectedKeyPendingReplacement());
        Assert.Equal(1, pending.RejectedVersion);
    }

    /// <summary>Returns a store in a database of its own.</summary>
    private static KeyStore NewStore()
    {
        MongoSetup.RegisterConventions();
        return new KeyStore(new MongoClient(TestEnvironment.MongoUri).GetDatabase("keys" + Guid.NewGuid().ToString("N")[..12]));
    }

    /// <summary>Stores a checked version with placeholder material, as KeyWorker does after the provider's check.</summary>
    private static async Task StoreAsync(KeyStore store, long version, string state)
    {
        var material = new StoredKeyMaterial
        {
            Version = version,
            Fingerprint = "fingerprint-" + version,
            Hint = Hint(version),
            MasterKeyId = "mk1",
            WrappedDataKey = [1, 2, 3],
            Nonce = [4, 5, 6],
            Ciphertext = [7, 8, 9],
        };
        bool stored = await store.StoreCheckedAsync(AppId, version, state, Hint(version), null, material, Now, default);
        Assert.True(stored);
    }

    private static string Hint(long version) => "sk-...000" + version;
}
