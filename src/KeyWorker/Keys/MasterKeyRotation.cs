using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Storage;

namespace AddOnEvents.KeyWorker.Keys;

/// <summary>Counts of one rotation run.</summary>
public sealed record RotationResult(int Rewrapped, int Skipped, int Failed);

/// <summary>
/// Rewraps every stored data key under the current master key. Only data keys are unwrapped; the provider keys
/// stay encrypted, so nothing secret can reach logs or output. Prompts keep working throughout, because each
/// document is swapped atomically and only if it still holds what was read.
/// </summary>
public sealed partial class MasterKeyRotation(KeyStore keys, EnvelopeCipher cipher, IMasterKeyProvider masterKeys, ILogger<MasterKeyRotation> logger)
{
    private const int BatchSize = 100;

    public async Task<RotationResult> RunAsync(CancellationToken cancellationToken)
    {
        string target = masterKeys.CurrentKeyId;
        int rewrapped = 0, skipped = 0, failed = 0;
        var failedApps = new HashSet<string>(StringComparer.Ordinal);
        while (true)
        {
            var batch = await keys.FindWrappedByOtherMasterKeyAsync(target, BatchSize + failedApps.Count, cancellationToken);
            batch.RemoveAll(document => failedApps.Contains(document.AppId));
            if (batch.Count == 0)
            {
                break;
            }

            foreach (var document in batch)
            {
                var material = document.Material!;
                try
                {
                    var encrypted = await cipher.RewrapAsync(material.ToEncryptedKey(), document.AppId, material.Version, cancellationToken);
                    var replacement = StoredKeyMaterial.From(encrypted, material.Version, material.Fingerprint, material.Hint);
                    if (await keys.ReplaceWrappedKeyAsync(document, replacement, cancellationToken))
                    {
                        rewrapped++;
                    }
                    else
                    {
                        skipped++;
                    }
                }
                catch (KeyDecryptionException)
                {
                    failed++;
                    failedApps.Add(document.AppId);
                    LogRewrapFailed(document.AppId, material.Version, material.MasterKeyId);
                }
            }
        }

        LogRotated(target, rewrapped, skipped, failed);
        return new RotationResult(rewrapped, skipped, failed);
    }

    [LoggerMessage(EventId = 2101, Level = LogLevel.Information,
        Message = "Rewrapped {Rewrapped} data keys under master key {MasterKeyId}; {Skipped} changed meanwhile, {Failed} failed")]
    private partial void LogRotated(string masterKeyId, int rewrapped, int skipped, int failed);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Error,
        Message = "Failed to rewrap the data key of app {AppId} version {KeyVersion} wrapped by master key {MasterKeyId}")]
    private partial void LogRewrapFailed(string appId, long keyVersion, string masterKeyId);
}
