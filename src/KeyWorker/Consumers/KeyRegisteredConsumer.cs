using System.Security.Cryptography;
using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.KeyWorker.Keys;
using MassTransit;
using Microsoft.Extensions.Options;
using MongoDB.Driver;

namespace AddOnEvents.KeyWorker.Consumers;

/// <summary>Opens a sealed key, checks it with the provider, encrypts it under a fresh data key and stores it.</summary>
public sealed partial class KeyRegisteredConsumer(
    KeyStore keys,
    EnvelopeCipher cipher,
    KeyFingerprinter fingerprinter,
    ProviderKeyChecker checker,
    SealingPrivateKey sealingKey,
    TimeProvider clock,
    IOptions<KeyWorkerOptions> options,
    ILogger<KeyRegisteredConsumer> logger) : IConsumer<KeyRegistered>
{
    public async Task Consume(ConsumeContext<KeyRegistered> context)
    {
        var message = context.Message;
        var cancellationToken = context.CancellationToken;
        if (await keys.IsSupersededAsync(message.AppId, message.KeyVersion, cancellationToken))
        {
            LogSuperseded(message.AppId, message.KeyVersion);
            return;
        }

        ProviderKey providerKey;
        try
        {
            providerKey = sealingKey.Open(message.SealedKey, SecretSealing.KeyContext(message.AppId, message.KeyVersion));
        }
        catch (CryptographicException)
        {
            // Retrying cannot help: the message was sealed to another key pair or changed on the way.
            LogUnsealFailed(message.AppId, message.KeyVersion, message.SealedKey.RecipientKeyId);
            await StoreAsync(context, KeyStates.Invalid, "?", ErrorCodes.KeyUnreadable, material: null);
            return;
        }

        using (providerKey)
        {
            string hint = providerKey.Hint();
            var check = await checker.CheckAsync(providerKey, cancellationToken);
            StoredKeyMaterial? material = null;
            if (check.State != KeyStates.Invalid)
            {
                var encrypted = await cipher.EncryptAsync(providerKey, message.AppId, message.KeyVersion, cancellationToken);
                material = StoredKeyMaterial.From(encrypted, message.KeyVersion, fingerprinter.Compute(providerKey), hint);
            }

            await StoreAsync(context, check.State, hint, check.ReasonCode, material);
        }
    }

    private async Task StoreAsync(ConsumeContext<KeyRegistered> context, string state, string hint, string? reasonCode, StoredKeyMaterial? material)
    {
        var message = context.Message;
        var now = clock.GetUtcNow();
        bool stored = await keys.StoreCheckedAsync(
            message.AppId, message.KeyVersion, state, hint, reasonCode, material, now.UtcDateTime, context.CancellationToken);
        if (!stored)
        {
            LogSuperseded(message.AppId, message.KeyVersion);
            return;
        }

        if (material is null)
        {
            LogRejected(message.AppId, message.KeyVersion, state);
        }
        else
        {
            LogStored(message.AppId, message.KeyVersion, state, material.MasterKeyId);
        }

        if (state == KeyStates.Unverified)
        {
            // A redelivery after a crash before this write repeats the check, so the schedule is not lost.
            var nextCheckAt = now + options.Value.RecheckDelay(attemptsMade: 0);
            await keys.ScheduleRecheckAsync(message.AppId, message.KeyVersion, nextCheckAt.UtcDateTime, context.CancellationToken);
        }

        await context.Publish(
            new KeyStatusChanged(message.CorrelationId, message.AppId, message.KeyVersion, state, hint, reasonCode, now),
            context.CancellationToken);
    }

    [LoggerMessage(EventId = 2001, Level = LogLevel.Information,
        Message = "Stored key of app {AppId} version {KeyVersion} as {State} under master key {MasterKeyId}")]
    private partial void LogStored(string appId, long keyVersion, string state, string masterKeyId);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Information,
        Message = "Recorded key of app {AppId} version {KeyVersion} as {State} without storing it. A key stored earlier stays in use")]
    private partial void LogRejected(string appId, long keyVersion, string state);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Information,
        Message = "Skipped key of app {AppId} version {KeyVersion}: a newer registration or a deletion replaced it")]
    private partial void LogSuperseded(string appId, long keyVersion);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Error,
        Message = "Failed to open the sealed key of app {AppId} version {KeyVersion} sealed to {RecipientKeyId}; it was stored as invalid")]
    private partial void LogUnsealFailed(string appId, long keyVersion, string recipientKeyId);
}

/// <summary>Settings of the key consumer.</summary>
public sealed class KeyWorkerOptions
{
    public const string SectionName = "KeyWorker";

    /// <summary>
    /// Retries after a database error, with backoff from 0.2 s up to 30 s between tries; the default of 15 rides out
    /// about five minutes of outage before the message goes to the error queue.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(0, 100)]
    public int RetryLimit { get; set; } = 15;

    /// <summary>
    /// Number of re-checks of an unverified key before it stays unverified with reason key_check_abandoned. With the default
    /// delay the five re-checks run about 0.5, 1.5, 3.5, 7.5 and 15.5 minutes after the first check.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(1, 20)]
    public int RecheckAttempts { get; set; } = 5;

    /// <summary>Seconds before the first re-check of an unverified key. The delay doubles after each re-check.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 3600)]
    public int RecheckDelaySeconds { get; set; } = 30;

    /// <summary>Seconds between two searches for unverified keys whose re-check is due.</summary>
    [System.ComponentModel.DataAnnotations.Range(1, 3600)]
    public int RecheckPollSeconds { get; set; } = 5;

    /// <summary>Returns the wait before the next re-check after <paramref name="attemptsMade"/> re-checks.</summary>
    public TimeSpan RecheckDelay(int attemptsMade) => TimeSpan.FromSeconds(RecheckDelaySeconds * Math.Pow(2, attemptsMade));
}

/// <summary>Retries on database errors with backoff; the message carries only the sealed key, so a parked copy reveals nothing.</summary>
public sealed class KeyRegisteredConsumerDefinition(IOptions<KeyWorkerOptions> options, IOptions<RabbitMqOptions> broker)
    : ConsumerDefinition<KeyRegisteredConsumer>
{
    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<KeyRegisteredConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        BusSetup.ConfigureWorkQueue(endpointConfigurator, broker.Value);

        endpointConfigurator.UseMessageRetry(retry =>
        {
            retry.Handle<MongoException>();
            retry.Handle<TimeoutException>();
            retry.Exponential(options.Value.RetryLimit, TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(500));
        });
    }
}

/// <summary>KeyWorker's half of the sealing key pair, loaded once from <c>Sealing:PrivateKey</c>.</summary>
public sealed class SealingPrivateKey(IOptions<SealingOptions> options) : IDisposable
{
    private readonly ECDiffieHellman _key = SealingKeys.Load(options.Value, privateKey: true);
    private readonly string _keyId = options.Value.KeyId!;

    public ProviderKey Open(SealedSecret sealedSecret, string context) => SecretSealing.Open(sealedSecret, _key, _keyId, context);

    public void Dispose() => _key.Dispose();
}
