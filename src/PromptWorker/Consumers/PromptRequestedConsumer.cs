using AddOnEvents.Common.Crypto;
using AddOnEvents.Common.Hosting;
using AddOnEvents.Common.Messaging;
using AddOnEvents.Common.Storage;
using AddOnEvents.Common.Upstream;
using AddOnEvents.Contracts;
using AddOnEvents.PromptWorker.Prompts;
using AddOnEvents.PromptWorker.Upstream;
using MassTransit;
using Microsoft.Extensions.Options;
using MongoDB.Driver;

namespace AddOnEvents.PromptWorker.Consumers;

/// <summary>
/// Answers one prompt with the app's own key and publishes one final result for its request id, however often
/// the message is delivered. The request is claimed in the result store first. A delivery that finds it finished
/// publishes the stored result again, because the worker that stored it may have died before publishing, and
/// Ingress drops a result it has already pushed.
/// </summary>
public sealed partial class PromptRequestedConsumer(
    KeyStore keys,
    PromptResultStore results,
    UsageStore usage,
    TokenReservationStore reservations,
    AddonActivation activation,
    EnvelopeCipher cipher,
    ChatCompletionCaller caller,
    InFlightPrompts inFlight,
    WorkerIdentity worker,
    IOptions<PromptWorkerOptions> options,
    IOptions<UpstreamOptions> upstreamOptions,
    TimeProvider clock,
    AddOnEventsMetrics metrics,
    IHostApplicationLifetime lifetime,
    ILogger<PromptRequestedConsumer> logger) : IConsumer<PromptRequested>
{
    /// <summary>
    /// How long a stored result's publish is tried again while the broker is unreachable. A redelivery of the prompt
    /// publishes the stored result too, and <c>GET /api/prompts/{id}</c> returns it until it expires.
    /// </summary>
    public static readonly TimeSpan ResultPublishPatience = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Maximum wait for one publish of a result and its confirm. While the broker is unreachable, a publish in
    /// MassTransit 8.5.12 waits for the connection rather than failing, and a wait that began before the broker came
    /// back may not end when it does, so a short try lets the next one reach the new connection. A try that timed out
    /// but still arrived only publishes the result twice, and Ingress pushes the first.
    /// </summary>
    public static readonly TimeSpan ResultPublishTimeout = TimeSpan.FromSeconds(3);

    // Cancelled only when the worker stops. Every step after the claim uses it in place of the delivery's token,
    // which a dropped broker connection cancels, so that an answer in progress is finished, stored and counted.
    private CancellationToken _runToken;

    // The overhead metric is the time of this delivery minus the time spent waiting for the upstream.
    private long _started;
    private TimeSpan _waitedOnUpstream;

    // The streamed text of an answer that ends early still costs tokens, which its usage must count.
    private PieceBatcher? _pieces;

    // Set once this delivery owns the claim, so a failure after it can be stored as the request's result.
    private bool _claimed;

    // A request the upstream received costs its prompt even when the user cancels it before any text arrives. Set
    // while a call runs, so a cancel during a wait between attempts counts nothing.
    private bool _inUpstreamCall;

    // Calls whose prompt the provider may bill although no usage came back: attempts that the upstream timeout cut
    // off before any text arrived, and the call of a worker that lost its claim while the call may have been running.
    private int _unansweredCalls;

    public async Task Consume(ConsumeContext<PromptRequested> context)
    {
        var prompt = context.Message;
        _started = clock.GetTimestamp();
        _waitedOnUpstream = TimeSpan.Zero;
        _pieces = null;
        _inUpstreamCall = false;
        _unansweredCalls = 0;
        _claimed = false;
        if (context.GetRetryAttempt() == 0)
        {
            metrics.QueueLag(clock.GetUtcNow() - prompt.RequestedAt);
        }

        using var run = new RunCancellation(() => LogDeliveryLost(prompt.RequestId, prompt.AppId), context.CancellationToken,
            lifetime.ApplicationStopping);
        _runToken = run.Token;
        try
        {
            await HandleAsync(context);
        }
        catch (Exception ex) when (ex is MongoException or TimeoutException && context.GetRetryAttempt() < options.Value.DatabaseRetryLimit)
        {
            throw;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !(_claimed ? _runToken : context.CancellationToken).IsCancellationRequested)
        {
            // The prompt text must not wait in an error queue, so every other failure becomes a result.
            LogUnexpectedFailure(prompt.RequestId, prompt.AppId, ex.GetType().Name);
            await PublishUnexpectedFailureAsync(context);
        }
    }

    /// <summary>
    /// Publishes internal_error for a delivery that failed unexpectedly. A claimed request also gets it stored, and
    /// text streamed before the failure counted, unless the database fails too: then only the publish remains.
    /// </summary>
    private async Task PublishUnexpectedFailureAsync(ConsumeContext<PromptRequested> context)
    {
        var failure = Failure(context.Message, ErrorCodes.InternalError, "AddOnEvents failed to handle this prompt. Try again later.");
        if (_claimed)
        {
            try
            {
                await PublishAsync(context, failure, storeFirst: true);
                return;
            }
            catch (Exception ex) when (ex is MongoException or TimeoutException)
            {
                LogStoreFailed(context.Message.RequestId, context.Message.AppId, ex.GetType().Name);
            }
        }

        await PublishAsync(context, failure, storeFirst: false);
    }

    private async Task HandleAsync(ConsumeContext<PromptRequested> context)
    {
        var prompt = context.Message;
        var now = clock.GetUtcNow();
        if (now > prompt.ExpiresAt)
        {
            LogExpired(prompt.RequestId, prompt.AppId);
            await PublishAsync(context, Failure(prompt, ErrorCodes.RequestExpired, "The prompt waited too long to be answered. Send it again."),
                storeFirst: false);
            return;
        }

        // The claim and the two reads do not depend on each other, so they share one round trip. Reads that a
        // long wait for another worker's lease made stale are done again.
        long claiming = clock.GetTimestamp();
        var appState = Observed(ReadAppStateAsync(prompt.AppId, context.CancellationToken));
        int attempt = await ClaimAsync(context);
        if (attempt == 0)
        {
            return;
        }

        _claimed = true;

        if (clock.GetElapsedTime(claiming) > TimeSpan.FromSeconds(1))
        {
            appState = ReadAppStateAsync(prompt.AppId, _runToken);
        }

        // A lease that lapsed while the broker was away would let the redelivered message call the upstream again.
        using var lease = StartLeaseRenewal(prompt, _runToken);
        using var registration = inFlight.Register(prompt.RequestId, prompt.AppId, prompt.UserId, _runToken);
        object result;
        AddonState? addon = null;
        try
        {
            // A cancel sent while the prompt was queued has already cancelled the token, so no upstream call is made.
            registration.Token.ThrowIfCancellationRequested();
            var state = await appState;
            addon = state.Addon;
            result = await AnswerAsync(context, attempt, state, registration.Token);
        }
        catch (OperationCanceledException) when (registration.CancelledByUser)
        {
            result = Failure(prompt, ErrorCodes.Cancelled, PromptResultStore.CancelledMessage);
        }

        await PublishAsync(context, result, storeFirst: true);

        // A prompt that finds its app switched off or removed counts no usage, so the check after counting does not run
        // for it. Its stored failure must still not outlive an app that was removed meanwhile.
        if (addon == AddonState.AppRemoved
            || (result is PromptFailed { Code: ErrorCodes.AddonInactive } && !await activation.ExistsAsync(prompt.AppId, _runToken)))
        {
            await results.DeleteAppAsync(prompt.AppId, _runToken);
        }
    }

    /// <summary>
    /// Claims the request for this worker and returns the number of its first upstream attempt, or 0 when another
    /// delivery finished or owns it. While the lease of another worker runs, it waits, because that worker may have
    /// died and its lease must run out first.
    /// </summary>
    private async Task<int> ClaimAsync(ConsumeContext<PromptRequested> context)
    {
        var prompt = context.Message;
        var settings = options.Value;
        var lease = TimeSpan.FromSeconds(settings.ClaimLeaseSeconds);
        while (true)
        {
            var now = clock.GetUtcNow().UtcDateTime;
            var expiresAt = now.AddSeconds(settings.ResultRetentionSeconds);
            var claim = await results.TryClaimAsync(prompt, worker.Id, now, lease, expiresAt, context.CancellationToken);
            if (claim.Outcome == ClaimOutcome.Claimed)
            {
                // The lease ran out because its worker died or stalled, possibly during an upstream call whose usage
                // never comes back. That call counts as its prompt, which is too much when the worker stopped before
                // calling.
                if (claim.Existing is not null)
                {
                    _unansweredCalls++;
                }

                return claim.Attempt;
            }

            if (claim.Outcome == ClaimOutcome.Finished)
            {
                LogDuplicate(prompt.RequestId);
                if (claim.Existing is { } stored)
                {
                    await PublishStoredAsync(context, stored);
                }

                // A cancel recorded before any worker claimed the prompt finishes it too.
                await ReleaseReservationAsync(prompt);
                return 0;
            }

            // Another worker owns a live lease on the request.
            if (clock.GetUtcNow() > prompt.ExpiresAt)
            {
                return 0;
            }

            await Task.Delay(TimeSpan.FromSeconds(1), clock, context.CancellationToken);
        }
    }

    /// <summary>Reads whether the app's add-on is active and its key document, both at once.</summary>
    private async Task<(AddonState Addon, KeyDocument? Key)> ReadAppStateAsync(string appId, CancellationToken cancellationToken)
    {
        var addon = activation.StateAsync(appId, cancellationToken);
        var key = keys.FindAsync(appId, cancellationToken);
        await Task.WhenAll(addon, key);
        return (await addon, await key);
    }

    /// <summary>
    /// Returns the task after marking its failure as observed, because the caller may drop it unawaited when the
    /// claim goes elsewhere. Awaiting it still throws.
    /// </summary>
    private static Task<T> Observed<T>(Task<T> task)
    {
        _ = task.ContinueWith(static done => _ = done.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        return task;
    }

    private async Task<object> AnswerAsync(ConsumeContext<PromptRequested> context, int firstAttempt, (AddonState Addon, KeyDocument? Key) appState,
        CancellationToken cancellationToken)
    {
        var prompt = context.Message;
        if (appState.Addon == AddonState.AppRemoved)
        {
            return Failure(prompt, ErrorCodes.Forbidden, "The app of this prompt was removed before the prompt was answered.");
        }

        if (appState.Addon == AddonState.Inactive)
        {
            return Failure(prompt, ErrorCodes.AddonInactive, "The add-on is switched off for this app. The developer can switch it on in the console.");
        }

        // An invalid or pending replacement leaves the previous key stored, and that key keeps serving unless the
        // provider rejected it too.
        var document = appState.Key;
        if (document is null || !document.HasUsableKey())
        {
            return UnusableKeyFailure(prompt, document);
        }

        var material = document.Material!;
        ProviderKey providerKey;
        try
        {
            providerKey = await cipher.DecryptAsync(material.ToEncryptedKey(), prompt.AppId, material.Version, cancellationToken);
        }
        catch (KeyDecryptionException)
        {
            LogKeyUnreadable(prompt.AppId, material.Version, material.MasterKeyId);
            return Failure(prompt, ErrorCodes.KeyUnreadable, "This app's stored key cannot be read. The developer must register it again.");
        }

        ChatOutcome outcome;
        using (providerKey)
        {
            outcome = await CallWithRetriesAsync(context, providerKey, firstAttempt, cancellationToken);
        }

        if (outcome.Succeeded)
        {
            LogCompleted(prompt.RequestId, prompt.AppId, outcome.FinishReason!, outcome.Usage!.TotalTokens);
            return new PromptCompleted(prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo,
                outcome.Text!, outcome.FinishReason!, outcome.Usage!, clock.GetUtcNow());
        }

        if (outcome.ErrorCode == ErrorCodes.UpstreamAuthFailed)
        {
            await keys.MarkRejectedAsync(prompt.AppId, material.Version, ErrorCodes.UpstreamAuthFailed, clock.GetUtcNow().UtcDateTime,
                cancellationToken);
        }

        int? retryAfter = outcome.RetryAfter is { } wait ? (int)Math.Ceiling(wait.TotalSeconds) : null;
        return Failure(prompt, outcome.ErrorCode!, outcome.ErrorMessage!, retryAfter);
    }

    /// <summary>Returns the failure for a prompt whose app has no stored key that may serve, with the reason.</summary>
    private PromptFailed UnusableKeyFailure(PromptRequested prompt, KeyDocument? document)
    {
        if (document?.State == KeyStates.Invalid)
        {
            return document.ReasonCode == ErrorCodes.KeyUnreadable
                ? Failure(prompt, ErrorCodes.KeyUnreadable, "This app's stored key cannot be read. The developer must register it again.")
                : Failure(prompt, ErrorCodes.KeyInvalid, "The AI provider rejected this app's OpenAI key. The developer must replace it.");
        }

        if (document is not null && document.IsRejectedKeyPendingReplacement())
        {
            return Failure(prompt, ErrorCodes.KeyInvalid,
                "The AI provider rejected this app's OpenAI key, and the replacement key is still being checked. Try again in a few seconds.");
        }

        return Failure(prompt, ErrorCodes.NoKeyConfigured, document?.State == KeyStates.Pending
            ? "This app's OpenAI key is still being checked. Try again in a few seconds."
            : "This app has no OpenAI key. The developer adds one in the console.");
    }

    /// <summary>
    /// Calls the upstream until it answers, fails for good, or the attempts counted in the result store (across
    /// redeliveries too) reach the configured maximum. 429 waits for Retry-After on every attempt, unless the wait
    /// is longer than the configured cap; other retryable failures back off exponentially with jitter.
    /// </summary>
    private async Task<ChatOutcome> CallWithRetriesAsync(ConsumeContext<PromptRequested> context, ProviderKey key, int firstAttempt,
        CancellationToken cancellationToken)
    {
        var prompt = context.Message;
        var settings = upstreamOptions.Value;
        var pieces = prompt.Stream ? new PieceBatcher(context, clock, options.Value, firstAttempt, logger, _runToken) : null;
        _pieces = pieces;
        int attempt = firstAttempt;
        while (true)
        {
            long called = clock.GetTimestamp();
            long receivedBefore = pieces?.ReceivedCharacters ?? 0;
            _inUpstreamCall = true;
            var outcome = await caller.CallAsync(key, prompt, attempt, pieces is null ? null : pieces.AddAsync, cancellationToken);
            _inUpstreamCall = false;
            _waitedOnUpstream += clock.GetElapsedTime(called);
            if (outcome.ErrorCode == ErrorCodes.UpstreamTimeout && (pieces?.ReceivedCharacters ?? 0) == receivedBefore)
            {
                _unansweredCalls++;
            }

            if (pieces is not null)
            {
                await pieces.FlushAsync();
                if (pieces.Dropped > 0)
                {
                    LogPiecesDropped(prompt.RequestId, prompt.AppId, pieces.Dropped, pieces.Published);
                }
            }

            if (outcome.Succeeded || !outcome.Retryable || attempt >= settings.MaxAttempts || pieces?.Published > 0)
            {
                return outcome;
            }

            TimeSpan wait;
            if (outcome.RetryAfter is { } retryAfter)
            {
                if (retryAfter > TimeSpan.FromSeconds(settings.MaxRetryAfterSeconds))
                {
                    return outcome;
                }

                // Timers can fire a millisecond or two early, and the next call must come after Retry-After.
                wait = retryAfter + TimeSpan.FromMilliseconds(100);
            }
            else
            {
                double backoff = settings.RetryBaseDelayMilliseconds * Math.Pow(2, attempt - 1);
                wait = TimeSpan.FromMilliseconds(backoff * (0.5 + Random.Shared.NextDouble()));
            }

            LogRetrying(prompt.RequestId, prompt.AppId, attempt, outcome.ErrorCode!, wait.TotalMilliseconds);
            await Task.Delay(wait, clock, cancellationToken);
            _waitedOnUpstream += wait;
            attempt = await results.CountAttemptAsync(prompt.RequestId, cancellationToken);
        }
    }

    /// <summary>
    /// Stores the result, publishes it and counts its usage once. Usage that a quota checks is stored and counted
    /// before the publish, because the check of the user's next prompt must include it. Otherwise the publish does
    /// not wait for the store, and usage is counted once the store has confirmed that this delivery's result is
    /// the one kept.
    /// </summary>
    private async Task PublishAsync(ConsumeContext<PromptRequested> context, object result, bool storeFirst)
    {
        var prompt = context.Message;
        bool countFirst = prompt.UsageLimited || prompt.Allowance is not null;
        Task<FinishOutcome>? storing = storeFirst ? Observed(StoreAsync(context, result)) : null;
        if (storing is not null && countFirst)
        {
            if (!await CountStoredAsync(context, result, await storing))
            {
                return;
            }

            await ReleaseReservationAsync(prompt);
            storing = null;
        }

        if (result is PromptFailed failed)
        {
            LogFailed(prompt.RequestId, prompt.AppId, failed.Code);
        }

        if (!storeFirst)
        {
            await context.Publish(result, result.GetType(), context.CancellationToken);
        }

        // The count waits for the store, not for the publish, which an unreachable broker can hold up for a minute.
        var publishing = storeFirst ? PublishResultAsync(context, result) : Task.CompletedTask;
        if (storing is not null)
        {
            FinishOutcome outcome;
            try
            {
                outcome = await storing;
            }
            catch (Exception ex) when (ex is MongoException or TimeoutException)
            {
                // The result is being published, so a retry of the delivery would only pay for a second upstream call.
                // The record stays pending until it expires, and the usage is counted, because it was spent.
                LogStoreFailed(prompt.RequestId, prompt.AppId, ex.GetType().Name);
                outcome = FinishOutcome.Stored;
            }

            // Another delivery that stored its result first has published it too, and Ingress pushes only the first.
            if (await CountStoredAsync(context, result, outcome))
            {
                await ReleaseReservationAsync(prompt);
            }
        }
        else if (!countFirst || !storeFirst)
        {
            // Nothing was stored: the prompt expired in the queue, or failed before or while storing its result.
            await ReleaseReservationAsync(prompt);
        }

        await publishing;

        metrics.PromptFinished(prompt.AppId, (result as PromptFailed)?.Code ?? AddOnEventsMetrics.Completed,
            clock.GetElapsedTime(_started) - _waitedOnUpstream);
    }

    private Task<FinishOutcome> StoreAsync(ConsumeContext<PromptRequested> context, object result) =>
        results.FinishAsync(context.Message.RequestId,
            result is PromptCompleted completed ? PromptResultStore.Completed(completed) : PromptResultStore.Failed((PromptFailed)result),
            _runToken);

    /// <summary>
    /// Publishes a result that is stored or being stored, trying again with growing waits for up to
    /// <see cref="ResultPublishPatience"/> while the broker is unreachable. It gives up without throwing, because a
    /// redelivery of the prompt publishes the stored result, and a failure published in its place would hide it.
    /// </summary>
    private async Task PublishResultAsync(ConsumeContext<PromptRequested> context, object result)
    {
        var prompt = context.Message;
        long started = clock.GetTimestamp();
        var wait = TimeSpan.FromMilliseconds(500);
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_runToken);
                timeout.CancelAfter(ResultPublishTimeout);
                await context.Publish(result, result.GetType(), timeout.Token);
                if (attempt > 1)
                {
                    LogResultPublished(prompt.RequestId, prompt.AppId, attempt);
                }

                return;
            }
            catch (Exception ex) when (!_runToken.IsCancellationRequested)
            {
                if (clock.GetElapsedTime(started) + wait > ResultPublishPatience)
                {
                    LogResultPublishAbandoned(prompt.RequestId, prompt.AppId, attempt, ex.GetType().Name);
                    return;
                }

                LogResultPublishFailed(prompt.RequestId, prompt.AppId, attempt, ex.GetType().Name, wait.TotalMilliseconds);
            }

            await Task.Delay(wait, clock, _runToken);
            wait = TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, TimeSpan.FromSeconds(8).Ticks));
        }
    }

    /// <summary>
    /// Counts the usage of an answer whose result this delivery stored, and returns false when another delivery
    /// stored its result first. A record that is gone belongs to an erased user or a removed app. Its usage then
    /// goes to the app's counters only, and a removed app's counters are deleted again after the count.
    /// </summary>
    private async Task<bool> CountStoredAsync(ConsumeContext<PromptRequested> context, object result, FinishOutcome outcome)
    {
        if (outcome == FinishOutcome.FinishedElsewhere)
        {
            return false;
        }

        if (UsageOf(context.Message, result) is { } spent)
        {
            await CountUsageAsync(context, spent, userErased: outcome == FinishOutcome.RecordGone);
        }

        return true;
    }

    /// <summary>
    /// Returns the upstream's usage of a completed answer, or an estimate for an answer that failed or was cancelled
    /// after part of it was streamed to the user, because the upstream reports usage only at the end of a stream.
    /// Without the estimate, a user could read most of an answer, cancel it and use no allowance. A cancel that
    /// ends the upstream request before any text arrived counts the prompt, which the upstream received, and so does
    /// each attempt that timed out before any text arrived, and the call of a worker whose claim this one took over.
    /// </summary>
    private TokenUsage? UsageOf(PromptRequested prompt, object result)
    {
        TokenUsage? unanswered = null;
        if (_unansweredCalls > 0)
        {
            int promptTokens = TokenEstimate.Of(prompt, 0).PromptTokens * _unansweredCalls;
            unanswered = new TokenUsage(promptTokens, 0, promptTokens);
        }

        if (result is PromptCompleted completed)
        {
            return Sum(completed.Usage, unanswered);
        }

        long received = _pieces?.ReceivedCharacters ?? 0;
        bool cancelledUpstream = _inUpstreamCall && result is PromptFailed { Code: ErrorCodes.Cancelled };
        if (received == 0 && !cancelledUpstream)
        {
            return unanswered;
        }

        return Sum(TokenEstimate.Of(prompt, received), unanswered);
    }

    private static TokenUsage Sum(TokenUsage usage, TokenUsage? more) => more is null
        ? usage
        : new TokenUsage(usage.PromptTokens + more.PromptTokens, usage.CompletionTokens + more.CompletionTokens, usage.TotalTokens + more.TotalTokens);

    /// <summary>
    /// Releases the tokens reserved for a prompt that a quota or an allowance checks, once it has finished and its
    /// usage is counted. Later deliveries of the same prompt find nothing to release.
    /// </summary>
    private Task ReleaseReservationAsync(PromptRequested prompt) =>
        prompt.UsageLimited || prompt.Allowance is not null ? reservations.ReleaseAsync(prompt.RequestId, CancellationToken.None) : Task.CompletedTask;

    /// <summary>
    /// Adds the answer's tokens to the app's and the user's counters, or only to the app's for an erased user, and
    /// publishes the threshold event when the user's allowance threshold is crossed.
    /// </summary>
    private async Task CountUsageAsync(ConsumeContext<PromptRequested> context, TokenUsage spent, bool userErased)
    {
        var prompt = context.Message;
        var now = clock.GetUtcNow();
        long tokens = spent.TotalTokens;
        bool quotaChecked = prompt.UsageLimited || prompt.Allowance is not null;
        bool created = true;
        if (userErased)
        {
            created = await usage.AddAppAsync(prompt.AppId, tokens, now.UtcDateTime, _runToken);
        }
        else if (prompt.Allowance is { } allowance)
        {
            long used = await usage.AddAndReadUserAsync(prompt.AppId, prompt.UserId, tokens, now.UtcDateTime, _runToken);
            if (CrossedThreshold(allowance, used - tokens, used))
            {
                await PublishThresholdAsync(context, new AllowanceThresholdCrossed(prompt.CorrelationId, prompt.RequestId, prompt.AppId,
                    prompt.UserId, prompt.ReplyTo, used, allowance.MonthlyTokens, allowance.ThresholdPercent, UsageStore.Month(now.UtcDateTime),
                    prompt.SealedUserRef, now));
            }
        }
        else
        {
            created = await usage.AddAsync(prompt.AppId, prompt.UserId, tokens, now.UtcDateTime, _runToken);
        }

        // Removing an app deletes its counters and results once more after its app record, so a document written
        // while the app was being removed is deleted either there or here, and none outlives the app. A count that
        // found its counters in place needs no check, because the removal deletes them later or the worker that created
        // them again checks. Counts under a quota always check, because Ingress creates quota counters without one.
        if ((created || quotaChecked) && !await activation.ExistsAsync(prompt.AppId, _runToken))
        {
            await usage.DeleteAppAsync(prompt.AppId, _runToken);
            await results.DeleteAppAsync(prompt.AppId, _runToken);
        }

        metrics.TokensUsed(prompt.AppId, spent);
    }

    /// <summary>
    /// Publishes the notice of a crossed allowance threshold. A failed publish loses only the notice: the usage is
    /// counted already, and an exception here would publish internal_error in place of the stored answer.
    /// </summary>
    private async Task PublishThresholdAsync(ConsumeContext<PromptRequested> context, AllowanceThresholdCrossed crossed)
    {
        try
        {
            await context.Publish(crossed, _runToken);
        }
        catch (Exception ex) when (!_runToken.IsCancellationRequested)
        {
            LogThresholdPublishFailed(crossed.RequestId, crossed.AppId, ex.GetType().Name);
        }
    }

    /// <summary>Tells whether this answer moved the user's monthly usage from below the threshold share to at or above it.</summary>
    public static bool CrossedThreshold(UserAllowance allowance, long before, long after)
    {
        long threshold = (long)Math.Ceiling(allowance.MonthlyTokens * allowance.ThresholdPercent / 100.0);
        return before < threshold && after >= threshold;
    }

    private async Task PublishStoredAsync(ConsumeContext<PromptRequested> context, PromptResultDocument stored)
    {
        var prompt = context.Message;
        object result = stored.Status == PromptStatus.Completed
            ? new PromptCompleted(prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo,
                stored.Text ?? "", stored.FinishReason ?? "stop", stored.Usage ?? new TokenUsage(0, 0, 0), clock.GetUtcNow())
            : Failure(prompt, stored.Code ?? ErrorCodes.InternalError, stored.Message ?? "The prompt failed.", stored.RetryAfterSeconds);
        await context.Publish(result, result.GetType(), context.CancellationToken);
    }

    private PromptFailed Failure(PromptRequested prompt, string code, string message, int? retryAfterSeconds = null) =>
        new(prompt.CorrelationId, prompt.RequestId, prompt.AppId, prompt.UserId, prompt.ReplyTo, code, message, retryAfterSeconds, clock.GetUtcNow());

    /// <summary>
    /// Renews the claim while the answer is being produced, so no other worker takes the request over. A cancel
    /// that the renewal finds recorded stops the prompt, because its broadcast may have reached no worker.
    /// </summary>
    private LeaseRenewal StartLeaseRenewal(PromptRequested prompt, CancellationToken cancellationToken)
    {
        var lease = TimeSpan.FromSeconds(options.Value.ClaimLeaseSeconds);
        return new LeaseRenewal(lease / 3, clock,
            async token =>
            {
                var now = clock.GetUtcNow().UtcDateTime;
                bool cancelled = await results.RenewLeaseAsync(prompt.RequestId, worker.Id, now + lease,
                    now.AddSeconds(options.Value.ResultRetentionSeconds), token);
                if (cancelled && inFlight.TryCancel(prompt.RequestId, prompt.AppId, prompt.UserId))
                {
                    LogRecordedCancel(prompt.RequestId, prompt.AppId);
                }
            },
            ex => LogRenewalFailed(prompt.RequestId, ex.GetType().Name),
            cancellationToken);
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

    [LoggerMessage(EventId = 3005, Level = LogLevel.Information,
        Message = "Published the stored result again for a second delivery of request {RequestId}")]
    private partial void LogDuplicate(Guid requestId);

    [LoggerMessage(EventId = 3006, Level = LogLevel.Warning,
        Message = "Retrying request {RequestId} of app {AppId} after attempt {Attempt} failed with {Code}; waiting {WaitMilliseconds} ms")]
    private partial void LogRetrying(Guid requestId, string appId, int attempt, string code, double waitMilliseconds);

    [LoggerMessage(EventId = 3007, Level = LogLevel.Information, Message = "Dropped expired request {RequestId} of app {AppId}")]
    private partial void LogExpired(Guid requestId, string appId);

    [LoggerMessage(EventId = 3009, Level = LogLevel.Warning,
        Message = "Failed to renew the claim on request {RequestId} with {ExceptionType}; trying again at the next renewal")]
    private partial void LogRenewalFailed(Guid requestId, string exceptionType);

    [LoggerMessage(EventId = 3011, Level = LogLevel.Warning,
        Message = "The broker delivery of request {RequestId} of app {AppId} was cancelled, as a dropped connection does. "
            + "The answer goes on, and its stored result is published when the broker is back")]
    private partial void LogDeliveryLost(Guid requestId, string appId);

    [LoggerMessage(EventId = 3012, Level = LogLevel.Information,
        Message = "Dropped {Dropped} pieces of request {RequestId} of app {AppId} while the broker was unreachable ({Sequences} sequence numbers used)")]
    private partial void LogPiecesDropped(Guid requestId, string appId, int dropped, int sequences);

    [LoggerMessage(EventId = 3013, Level = LogLevel.Warning,
        Message = "Failed to publish the result of request {RequestId} of app {AppId} (attempt {Attempt}) with {ExceptionType}, "
            + "trying again in {WaitMilliseconds} ms")]
    private partial void LogResultPublishFailed(Guid requestId, string appId, int attempt, string exceptionType, double waitMilliseconds);

    [LoggerMessage(EventId = 3014, Level = LogLevel.Information, Message = "Published the result of request {RequestId} of app {AppId} at attempt {Attempt}")]
    private partial void LogResultPublished(Guid requestId, string appId, int attempt);

    [LoggerMessage(EventId = 3015, Level = LogLevel.Error,
        Message = "Gave up publishing the stored result of request {RequestId} of app {AppId} after {Attempt} attempts, the last failing with "
            + "{ExceptionType}. A redelivery of the prompt publishes it, and GET /api/prompts/{{id}} returns it")]
    private partial void LogResultPublishAbandoned(Guid requestId, string appId, int attempt, string exceptionType);

    [LoggerMessage(EventId = 3017, Level = LogLevel.Information,
        Message = "Stopping request {RequestId} of app {AppId} for a cancel that the lease renewal found in its record")]
    private partial void LogRecordedCancel(Guid requestId, string appId);

    [LoggerMessage(EventId = 3016, Level = LogLevel.Warning,
        Message = "Failed to publish the allowance threshold notice of request {RequestId} of app {AppId} with {ExceptionType}")]
    private partial void LogThresholdPublishFailed(Guid requestId, string appId, string exceptionType);

    [LoggerMessage(EventId = 3008, Level = LogLevel.Warning,
        Message = "Published request {RequestId} of app {AppId}, but storing its result failed with {ExceptionType}")]
    private partial void LogStoreFailed(Guid requestId, string appId, string exceptionType);
}

/// <summary>A background loop that renews a claim until disposed.</summary>
public sealed class LeaseRenewal : IDisposable
{
    private readonly PeriodicTimer _timer;
    private readonly CancellationTokenSource _stop;

    /// <param name="failed">Receives each failed renewal. The loop goes on and tries again at the next tick.</param>
    public LeaseRenewal(TimeSpan interval, TimeProvider clock, Func<CancellationToken, Task> renew, Action<Exception> failed,
        CancellationToken cancellationToken)
    {
        _timer = new PeriodicTimer(interval, clock);
        _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        _ = RunAsync(renew, failed, _stop.Token);
    }

    private async Task RunAsync(Func<CancellationToken, Task> renew, Action<Exception> failed, CancellationToken token)
    {
        try
        {
            while (await _timer.WaitForNextTickAsync(token))
            {
                try
                {
                    await renew(token);
                }
                catch (Exception ex) when (ex is MongoException or TimeoutException)
                {
                    // A lease lasts three intervals, so the next renewal may still come in time after a short
                    // database outage, and keep other workers from calling the upstream a second time.
                    failed(ex);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The prompt ended while a renewal was running, or the worker is stopping.
        }
    }

    public void Dispose()
    {
        // Every prompt ends its renewal. Disposing the timer first ends the wait with false. A cancelled wait throws
        // instead, and the stack trace captured for that exception took about a seventh of this worker's CPU.
        _timer.Dispose();
        _stop.Cancel();
        _stop.Dispose();
    }
}

/// <summary>Bounded concurrency comes from the bus settings; database errors are retried a few times, then failed.</summary>
public sealed class PromptRequestedConsumerDefinition(IOptions<PromptWorkerOptions> options, IOptions<RabbitMqOptions> broker)
    : ConsumerDefinition<PromptRequestedConsumer>
{
    protected override void ConfigureConsumer(
        IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<PromptRequestedConsumer> consumerConfigurator,
        IRegistrationContext context)
    {
        BusSetup.ConfigureWorkQueue(endpointConfigurator, broker.Value);

        // Prompt text is personal data: a message that cannot be read or handled is dropped, never parked in an
        // error or skipped queue where it would stay readable. Handled failures become PromptFailed results.
        endpointConfigurator.DiscardFaultedMessages();
        endpointConfigurator.DiscardSkippedMessages();
        endpointConfigurator.UseMessageRetry(retry =>
        {
            retry.Handle<MongoException>();
            retry.Handle<TimeoutException>();
            retry.Exponential(options.Value.DatabaseRetryLimit, TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(5),
                TimeSpan.FromMilliseconds(300));
        });
    }
}

/// <summary>Stops the named prompt if this process is answering it.</summary>
public sealed class PromptCancelledConsumer(InFlightPrompts inFlight) : IConsumer<PromptCancelled>
{
    public Task Consume(ConsumeContext<PromptCancelled> context)
    {
        var message = context.Message;
        inFlight.TryCancel(message.RequestId, message.AppId, message.UserId);
        return Task.CompletedTask;
    }
}

/// <summary>Id of this worker process in claims; unique per start, so a restarted process never mistakes an old claim for its own.</summary>
public sealed class WorkerIdentity
{
    public string Id { get; } = Environment.MachineName + "-" + Guid.NewGuid().ToString("N")[..8];
}
