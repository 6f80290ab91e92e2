using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.KeyWorker.Consumers;
using MassTransit;
using Microsoft.Extensions.Options;

namespace AddOnEvents.KeyWorker.Keys;

/// <summary>
/// Checks unverified keys with the provider again, with a delay that doubles after each re-check, until the provider
/// accepts or rejects the key or the attempts run out. Every KeyWorker instance runs it, and a claim with a lease in
/// the key document makes sure that only one instance checks a key at a time.
/// </summary>
public sealed partial class UnverifiedKeyRechecker(
    KeyStore keys,
    EnvelopeCipher cipher,
    ProviderKeyChecker checker,
    IBus bus,
    TimeProvider clock,
    IOptions<KeyWorkerOptions> options,
    ILogger<UnverifiedKeyRechecker> logger) : BackgroundService
{
    private const int MaxChecksPerTick = 50;

    /// <summary>
    /// Time for which a claimed key is hidden from other instances. It is longer than the longest key check that
    /// <c>Upstream:KeyCheckTimeoutSeconds</c> allows (300 s).
    /// </summary>
    private static readonly TimeSpan ClaimLease = TimeSpan.FromMinutes(10);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.Value.RecheckPollSeconds), clock);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await RecheckDueKeysAsync(stoppingToken);
            }
            catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
            {
                // An exception that escaped here would stop the whole KeyWorker process, and the claimed key is
                // checked again once its lease runs out.
                LogPassFailed(ex.GetType().Name);
            }
        }
    }

    /// <summary>Re-checks the keys that are due now, up to <see cref="MaxChecksPerTick"/>.</summary>
    public async Task RecheckDueKeysAsync(CancellationToken cancellationToken)
    {
        for (int i = 0; i < MaxChecksPerTick; i++)
        {
            var now = clock.GetUtcNow().UtcDateTime;
            var document = await keys.ClaimDueRecheckAsync(now, now + ClaimLease, cancellationToken);
            if (document is null)
            {
                return;
            }

            await RecheckAsync(document, cancellationToken);
        }
    }

    private async Task RecheckAsync(KeyDocument document, CancellationToken cancellationToken)
    {
        var material = document.Material!;
        int attempts = document.RecheckAttempts + 1;
        KeyCheckResult check;
        try
        {
            using var providerKey = await cipher.DecryptAsync(material.ToEncryptedKey(), document.AppId, material.Version, cancellationToken);
            check = await checker.CheckAsync(providerKey, cancellationToken);
        }
        catch (KeyDecryptionException)
        {
            // Checking again cannot help while the master key is missing, and prompts fail with key_unreadable anyway.
            LogUnreadable(document.AppId, material.Version, material.MasterKeyId);
            await StoreAsync(document, KeyStates.Unverified, ErrorCodes.KeyUnreadable, attempts, nextCheckAt: null, cancellationToken);
            return;
        }

        if (check.State != KeyStates.Unverified)
        {
            await StoreAsync(document, check.State, check.ReasonCode, attempts, nextCheckAt: null, cancellationToken);
        }
        else if (attempts < options.Value.RecheckAttempts)
        {
            var nextCheckAt = clock.GetUtcNow() + options.Value.RecheckDelay(attempts);
            await StoreAsync(document, check.State, check.ReasonCode, attempts, nextCheckAt.UtcDateTime, cancellationToken);
        }
        else
        {
            LogAbandoned(document.AppId, document.Version, attempts, check.ReasonCode);
            await StoreAsync(document, check.State, ErrorCodes.KeyCheckAbandoned, attempts, nextCheckAt: null, cancellationToken);
        }
    }

    /// <summary>Stores a re-check's outcome and, once the re-checks of the key end, publishes its final status.</summary>
    private async Task StoreAsync(
        KeyDocument document, string state, string? reasonCode, int attempts, DateTime? nextCheckAt, CancellationToken cancellationToken)
    {
        var now = clock.GetUtcNow();
        if (!await keys.StoreRecheckedAsync(document, state, reasonCode, attempts, nextCheckAt, now.UtcDateTime, cancellationToken))
        {
            LogSuperseded(document.AppId, document.Version);
            return;
        }

        LogRechecked(document.AppId, document.Version, attempts, state, reasonCode);
        if (nextCheckAt is not null)
        {
            return;
        }

        try
        {
            await bus.Publish(
                new KeyStatusChanged(NewId.NextGuid(), document.AppId, document.Version, state, document.Hint, reasonCode, now),
                cancellationToken);
        }
        catch (MassTransitException ex)
        {
            // The status is stored already and the event only informs, so a broker outage must not stop the re-checks.
            LogPublishFailed(document.AppId, document.Version, ex.GetType().Name);
        }
    }

    [LoggerMessage(EventId = 2201, Level = LogLevel.Information,
        Message = "Re-checked key of app {AppId} version {KeyVersion} (attempt {Attempt}): {State}, reason {ReasonCode}")]
    private partial void LogRechecked(string appId, long keyVersion, int attempt, string state, string? reasonCode);

    [LoggerMessage(EventId = 2202, Level = LogLevel.Warning,
        Message = "Stopped re-checking key of app {AppId} version {KeyVersion} after {Attempts} attempts with last reason {ReasonCode}. "
            + "Saving the key again restarts the checks")]
    private partial void LogAbandoned(string appId, long keyVersion, int attempts, string? reasonCode);

    [LoggerMessage(EventId = 2203, Level = LogLevel.Information,
        Message = "Dropped the re-check of key of app {AppId} version {KeyVersion}: it was replaced, deleted or rejected meanwhile")]
    private partial void LogSuperseded(string appId, long keyVersion);

    [LoggerMessage(EventId = 2204, Level = LogLevel.Error,
        Message = "Failed to decrypt the key of app {AppId} version {KeyVersion} wrapped by master key {MasterKeyId}, so it is not checked again")]
    private partial void LogUnreadable(string appId, long keyVersion, string masterKeyId);

    [LoggerMessage(EventId = 2205, Level = LogLevel.Warning,
        Message = "Failed to look for unverified keys to re-check: {ExceptionType}. Retrying on the next tick")]
    private partial void LogPassFailed(string exceptionType);

    [LoggerMessage(EventId = 2206, Level = LogLevel.Warning,
        Message = "Failed to publish the re-checked status of key of app {AppId} version {KeyVersion}: {ExceptionType}")]
    private partial void LogPublishFailed(string appId, long keyVersion, string exceptionType);
}
