using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Storage;
using AddOnEvents.Contracts;
using AddOnEvents.PromptWorker.Upstream;
using MassTransit;
using MongoDB.Driver;

namespace AddOnEvents.PromptWorker.Consumers;

/// <summary>Answers one prompt with the app's own key and publishes exactly one result for it.</summary>
public sealed partial class PromptRequestedConsumer(
    KeyStore keys,
    EnvelopeCipher cipher,
    ChatCompletionCaller caller,
    TimeProvider clock,
    ILogger<PromptRequestedConsumer> logger) : IConsumer<PromptRequested>
{
    /// <summary>Database retries before the prompt is failed, so a prompt never waits in an error queue.</summary>
    public const int DatabaseRetryLimit = 5;

    public async Task Consume(ConsumeContext<PromptRequested> context)
    {
        var prompt = context.Message;
        try
        {
            await AnswerAsync(context, prompt);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException && context.GetRetryAttempt() < DatabaseRetryLimit)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !context.CancellationToken.IsCancellationRequested)
        {
            // The prompt text must not end up in an error queue, so every other failure becomes a result.
            LogUnexpectedFailure(prompt.RequestId, prompt.AppId, ex.GetType().Name);
            await FailAsync(context, ErrorCodes.InternalError, "AddOnEvents failed to handle this prompt. Try again later.");
        }
    }

    private async Task AnswerAsync(ConsumeContext<PromptRequested> context, PromptRequested prompt)
    {
        if (clock.GetUtcNow() > prompt.ExpiresAt)
        {
            await FailAsync(context, ErrorCodes.RequestExpired, "The prompt waited too long to be answered. Send it again.");
            return;
        }

        var document = await keys.FindAsync(prompt.AppId, context.CancellationToken);
        var material = document?.Material;
        if (document is null || material is null)
        {
            bool pending = document?.State == KeyStates.Pending;
            await FailAsync(context, ErrorCodes.NoKeyConfigured, pending
                ? "This app's OpenAI key is still being checked. Try again in a few seconds."
                : "This app has no OpenAI key. The developer adds one in the console.");
            return;
        }

        if (document.State == KeyStates.Invalid && document.Version == material.Version)
        {
            await FailAsync(context, ErrorCodes.KeyInvalid, "The AI provider rejected this app's OpenAI key. The developer must replace it.");
            return;
        }

        ProviderKey providerKey;
        try
        {
            providerKey = await cipher.DecryptAsync(material.ToEncryptedKey(), prompt.AppId, material.Version, context.CancellationToken);
        }
        catch (KeyDecryptionException)
        {
            LogKeyUnreadable(prompt.AppId, material.Version, material.MasterKeyId);
            await FailAsync(context, ErrorCodes.KeyUnreadable, "This app's stored key cannot be read. The developer must register it again.");
            return;
        }

        ChatOutcome outcome;
        using (providerKey)
        {
            outcome = await caller.CompleteAsync(providerKey, prompt, context.CancellationToken);
        }

        if (!outcome.Succeeded)
        {
            if (outcome.ErrorCode == ErrorCodes.UpstreamAuthFailed)
            {
                await keys.MarkRejectedAsync(prompt.AppId, material.Version, ErrorCodes.UpstreamAuthFailed, clock.GetUtcNow().UtcDateTime,
                    context.CancellationToken);
            }

            await FailAsync(context, outcome.ErrorCode!, outcome.ErrorMessage!);
            return;
        }

        LogCompleted(prompt.RequestId, prompt.AppId, outcome.FinishReason!, outcome.Usage!.TotalTokens);
        await context.Publish(new PromptCompleted(
            prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo,
            outcome.Text!, outcome.FinishReason!, outcome.Usage!, clock.GetUtcNow()), context.CancellationToken);
    }

    private async Task FailAsync(ConsumeContext<PromptRequested> context, string code, string message)
    {
        var prompt = context.Message;
        LogFailed(prompt.RequestId, prompt.AppId, code);
        await context.Publish(new PromptFailed(
            prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo,
            code, message, RetryAfterSeconds: null, clock.GetUtcNow()), context.CancellationToken);
    }

    [LoggerMessage(EventId = 3001, Level = LogLevel.Information,
        Message = "Answered request {RequestId} of app {AppId}: finish reason {FinishReason}, {TotalTokens} tokens")]
    private partial void LogCompleted(Guid requestId, string appId, string finishReason, int totalTokens);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information, Message = "Failed request {RequestId} of app {AppId} with {Code}")]
    private partial void LogFailed(Guid requestId, string appId, string code);

    [LoggerMessage(EventId = 3003, Level = LogLevel.Error,
        Message = "Failed to decrypt the key of app {AppId} version {KeyVersion} wrapped by master key {MasterKeyId}")]
    private partial void LogKeyUnreadable(string appId, long keyVersion, string masterKeyId);

    [LoggerMessage(EventId = 3004, Level = LogLevel.Error,
        Message = "Failed request {RequestId} of app {AppId} after an unexpected {ExceptionType}")]
    private partial void LogUnexpectedFailure(Guid requestId, string appId, string exceptionType);
}

/// <summary>Bounded concurrency comes from the bus settings; database errors are retried a few times, then failed.</summary>
public sealed class PromptRequestedConsumerDefinition : ConsumerDefinition<PromptRequestedConsumer>
{
    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<PromptRequestedConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        if (endpointConfigurator is IRabbitMqReceiveEndpointConfigurator rabbit)
        {
            rabbit.SetQuorumQueue();
        }

        endpointConfigurator.UseMessageRetry(retry =>
        {
            retry.Handle<MongoException>();
            retry.Handle<TimeoutException>();
            retry.Exponential(PromptRequestedConsumer.DatabaseRetryLimit, TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(5),
                TimeSpan.FromMilliseconds(300));
        });
    }
}
