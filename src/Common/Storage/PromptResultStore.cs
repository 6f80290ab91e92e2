using AddOnEvents.Contracts;
using MongoDB.Bson.Serialization.Attributes;
using MongoDB.Driver;

namespace AddOnEvents.Common.Storage;

public static class PromptStatus
{
    public const string Pending = "pending";
    public const string Completed = "completed";
    public const string Failed = "failed";
}

/// <summary>
/// The short-lived record of one request id: the claim of the worker answering it, then its result, kept so a
/// redelivered message causes no second upstream call and a client that was offline can fetch the answer.
/// Prompt text is never stored; the answer text is, until <see cref="ExpiresAt"/>.
/// </summary>
public sealed class PromptResultDocument
{
    [BsonId]
    public Guid RequestId { get; set; }

    public string AppId { get; set; } = "";

    /// <summary>Pseudonym of the end user, as in the messages.</summary>
    public string UserId { get; set; } = "";

    public string Status { get; set; } = PromptStatus.Pending;

    public string? Text { get; set; }

    public string? FinishReason { get; set; }

    public TokenUsage? Usage { get; set; }

    public string? Code { get; set; }

    public string? Message { get; set; }

    public int? RetryAfterSeconds { get; set; }

    /// <summary>
    /// Mark of a user's cancel that arrived while a worker held the claim. The worker reads it at each lease renewal,
    /// because the broadcast cancel reaches no worker while their cancel queues are down, as after a broker outage.
    /// </summary>
    public bool CancelRequested { get; set; }

    /// <summary>Worker instance holding the claim; another takes over only after <see cref="LeaseUntil"/>.</summary>
    public string LeaseOwner { get; set; } = "";

    public DateTime LeaseUntil { get; set; }

    /// <summary>Upstream calls made for this request across every delivery of its message.</summary>
    public int Attempts { get; set; }

    public DateTime CreatedAt { get; set; }

    public DateTime ExpiresAt { get; set; }
}

public enum FinishOutcome
{
    /// <summary>This delivery's result is the stored one.</summary>
    Stored,

    /// <summary>Another delivery stored its result first.</summary>
    FinishedElsewhere,

    /// <summary>The record is gone: its app was removed, or it outlived its retention while the upstream call ran.</summary>
    RecordGone,
}

public enum ClaimOutcome
{
    /// <summary>This worker holds the request now.</summary>
    Claimed,

    /// <summary>Another worker holds a live lease on it.</summary>
    HeldElsewhere,

    /// <summary>The request already has a result.</summary>
    Finished,
}

/// <summary>
/// How a claim ended, and for a claim taken, the number of the upstream attempt it may make. A claim taken over from
/// a worker whose lease ran out contains the record after the takeover, and a new claim contains none.
/// </summary>
public readonly record struct Claim(ClaimOutcome Outcome, PromptResultDocument? Existing, int Attempt);

public sealed class PromptResultStore(IMongoDatabase database)
{
    /// <summary>The message of a cancelled request's failure, the same whether it was running or still queued.</summary>
    public const string CancelledMessage = "The answer was stopped.";

    public const string CollectionName = "promptResults";

    private static readonly StoredField<PromptResultDocument, Guid> RequestIdField = new(r => r.RequestId);
    private static readonly StoredField<PromptResultDocument, string> StatusField = new(r => r.Status);
    private static readonly StoredField<PromptResultDocument, string?> TextField = new(r => r.Text);
    private static readonly StoredField<PromptResultDocument, string?> FinishReasonField = new(r => r.FinishReason);
    private static readonly StoredField<PromptResultDocument, TokenUsage?> UsageField = new(r => r.Usage);
    private static readonly StoredField<PromptResultDocument, string?> CodeField = new(r => r.Code);
    private static readonly StoredField<PromptResultDocument, string?> MessageField = new(r => r.Message);
    private static readonly StoredField<PromptResultDocument, int?> RetryAfterField = new(r => r.RetryAfterSeconds);

    private readonly CollectionParts<PromptResultDocument> _results = new(database, CollectionName);

    public Task<PromptResultDocument?> FindAsync(Guid requestId, CancellationToken cancellationToken) =>
        _results.For(requestId).Find(Builders<PromptResultDocument>.Filter.Eq(RequestIdField, requestId)).FirstOrDefaultAsync(cancellationToken)!;

    /// <summary>
    /// Claims a request for one worker: inserts the record, or takes over a pending record whose lease ran out
    /// because its worker died. Either way the claim counts the first upstream attempt of this delivery, which
    /// saves a write per prompt.
    /// </summary>
    public async Task<Claim> TryClaimAsync(
        PromptRequested prompt, string owner, DateTime now, TimeSpan lease, DateTime expiresAt, CancellationToken cancellationToken)
    {
        try
        {
            await _results.For(prompt.RequestId).InsertOneAsync(NewClaim(prompt, owner, now, lease, expiresAt), cancellationToken: cancellationToken);
            return new Claim(ClaimOutcome.Claimed, null, 1);
        }
        catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
        {
            // Another delivery of the same request id got here first.
        }

        var existing = await FindAsync(prompt.RequestId, cancellationToken);
        if (existing is not null && (existing.AppId != prompt.AppId || existing.UserId != prompt.UserId))
        {
            return await TakeOverForeignCancelAsync(prompt, existing, owner, now, lease, expiresAt, cancellationToken);
        }

        if (existing is null || existing.Status != PromptStatus.Pending)
        {
            return new Claim(ClaimOutcome.Finished, existing, 0);
        }

        // A live lease means a consumer is answering, in this process too when the broker redelivered the message
        // after a connection drop, so only an expired lease can be taken over.
        if (existing.LeaseUntil > now)
        {
            return new Claim(ClaimOutcome.HeldElsewhere, existing, 0);
        }

        var takenOver = await _results.For(prompt.RequestId).FindOneAndUpdateAsync<PromptResultDocument>(
            r => r.RequestId == prompt.RequestId && r.Status == PromptStatus.Pending && r.LeaseUntil == existing.LeaseUntil
                && r.LeaseOwner == existing.LeaseOwner,
            Builders<PromptResultDocument>.Update.Set(r => r.LeaseOwner, owner).Set(r => r.LeaseUntil, now + lease).Set(r => r.ExpiresAt, expiresAt)
                .Inc(r => r.Attempts, 1),
            new FindOneAndUpdateOptions<PromptResultDocument> { ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return takenOver is null ? new Claim(ClaimOutcome.HeldElsewhere, existing, 0) : new Claim(ClaimOutcome.Claimed, takenOver, takenOver.Attempts);
    }

    /// <summary>
    /// Records a user's cancel. A request without a record gets the cancel as its result, so a worker that receives
    /// the prompt later, even one started after the cancel, finds it finished and makes no upstream call. A pending
    /// request of the same app and user gets <see cref="PromptResultDocument.CancelRequested"/> set.
    /// </summary>
    public async Task RecordCancelAsync(Guid requestId, string appId, string userId, DateTime now, DateTime expiresAt,
        CancellationToken cancellationToken)
    {
        try
        {
            await _results.For(requestId).InsertOneAsync(new PromptResultDocument
            {
                RequestId = requestId,
                AppId = appId,
                UserId = userId,
                Status = PromptStatus.Failed,
                Code = ErrorCodes.Cancelled,
                Message = CancelledMessage,
                CreatedAt = now,
                ExpiresAt = expiresAt,
            }, cancellationToken: cancellationToken);
        }
        catch (MongoException ex) when (MongoErrors.IsDuplicateKey(ex))
        {
            // A worker claimed the request. The broadcast cancel usually stops it first, and this mark stops it at
            // its next lease renewal when the broadcast did not.
            await _results.For(requestId).UpdateOneAsync(
                r => r.RequestId == requestId && r.AppId == appId && r.UserId == userId && r.Status == PromptStatus.Pending,
                Builders<PromptResultDocument>.Update.Set(r => r.CancelRequested, true),
                cancellationToken: cancellationToken);
        }
    }

    /// <summary>
    /// Replaces a cancel that another user recorded for this request id with this worker's claim. Request ids are
    /// unique, so a record of a different app or user can only be such a cancel, and it must not stop the prompt
    /// of the user who owns the id.
    /// </summary>
    private async Task<Claim> TakeOverForeignCancelAsync(PromptRequested prompt, PromptResultDocument foreign, string owner, DateTime now,
        TimeSpan lease, DateTime expiresAt, CancellationToken cancellationToken)
    {
        var replaced = await _results.For(prompt.RequestId).ReplaceOneAsync(
            r => r.RequestId == prompt.RequestId && r.AppId == foreign.AppId && r.UserId == foreign.UserId
                && r.Status == PromptStatus.Failed && r.Code == ErrorCodes.Cancelled && r.Attempts == 0,
            NewClaim(prompt, owner, now, lease, expiresAt),
            cancellationToken: cancellationToken);

        // Another delivery of the same prompt replaced it first and owns the claim now.
        return replaced.MatchedCount > 0 ? new Claim(ClaimOutcome.Claimed, null, 1) : new Claim(ClaimOutcome.HeldElsewhere, null, 0);
    }

    /// <summary>Builds the pending record of a claim that counts the first upstream attempt of this delivery.</summary>
    private static PromptResultDocument NewClaim(PromptRequested prompt, string owner, DateTime now, TimeSpan lease, DateTime expiresAt) => new()
    {
        RequestId = prompt.RequestId,
        AppId = prompt.AppId,
        UserId = prompt.UserId,
        LeaseOwner = owner,
        LeaseUntil = now + lease,
        Attempts = 1,
        CreatedAt = now,
        ExpiresAt = expiresAt,
    };

    /// <summary>
    /// Extends the worker's lease, and the record's expiry with it: a call that runs longer than the retention would
    /// otherwise lose its record, and with it the count of its usage. Returns true when the user has cancelled the
    /// request (see <see cref="RecordCancelAsync"/>).
    /// </summary>
    public async Task<bool> RenewLeaseAsync(Guid requestId, string owner, DateTime leaseUntil, DateTime expiresAt,
        CancellationToken cancellationToken)
    {
        var renewed = await _results.For(requestId).FindOneAndUpdateAsync<PromptResultDocument>(
            r => r.RequestId == requestId && r.LeaseOwner == owner && r.Status == PromptStatus.Pending,
            Builders<PromptResultDocument>.Update.Set(r => r.LeaseUntil, leaseUntil).Set(r => r.ExpiresAt, expiresAt),
            new FindOneAndUpdateOptions<PromptResultDocument> { ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return renewed?.CancelRequested == true;
    }

    /// <summary>Counts one more upstream attempt and returns the total so far, across deliveries.</summary>
    public async Task<int> CountAttemptAsync(Guid requestId, CancellationToken cancellationToken)
    {
        var document = await _results.For(requestId).FindOneAndUpdateAsync<PromptResultDocument>(
            r => r.RequestId == requestId,
            Builders<PromptResultDocument>.Update.Inc(r => r.Attempts, 1),
            new FindOneAndUpdateOptions<PromptResultDocument> { ReturnDocument = ReturnDocument.After },
            cancellationToken);
        return document?.Attempts ?? 1;
    }

    /// <summary>Records the final result; the first one written wins and later ones are ignored.</summary>
    public async Task<FinishOutcome> FinishAsync(Guid requestId, UpdateDefinition<PromptResultDocument> result, CancellationToken cancellationToken)
    {
        var filter = Builders<PromptResultDocument>.Filter;
        var outcome = await _results.For(requestId).UpdateOneAsync(
            filter.Eq(RequestIdField, requestId) & filter.Eq(StatusField, PromptStatus.Pending),
            result,
            cancellationToken: cancellationToken);
        if (outcome.ModifiedCount > 0)
        {
            return FinishOutcome.Stored;
        }

        return await FindAsync(requestId, cancellationToken) is null ? FinishOutcome.RecordGone : FinishOutcome.FinishedElsewhere;
    }

    public static UpdateDefinition<PromptResultDocument> Completed(PromptCompleted completed) =>
        Builders<PromptResultDocument>.Update
            .Set(StatusField, PromptStatus.Completed)
            .Set(TextField, completed.Text)
            .Set(FinishReasonField, completed.FinishReason)
            .Set(UsageField, completed.Usage);

    public static UpdateDefinition<PromptResultDocument> Failed(PromptFailed failed) =>
        Builders<PromptResultDocument>.Update
            .Set(StatusField, PromptStatus.Failed)
            .Set(CodeField, failed.Code)
            .Set(MessageField, failed.Message)
            .Set(RetryAfterField, failed.RetryAfterSeconds);

    public Task DeleteAppAsync(string appId, CancellationToken cancellationToken) =>
        _results.DeleteManyAsync(Builders<PromptResultDocument>.Filter.Where(r => r.AppId == appId), cancellationToken);

    /// <summary>Returns the stored requests of one end user of an app, oldest first.</summary>
    public async Task<List<PromptResultDocument>> FindUserAsync(string appId, string userId, CancellationToken cancellationToken) =>
        [.. (await _results.FindAsync(OfUser(appId, userId), cancellationToken)).OrderBy(r => r.CreatedAt)];

    public Task<long> DeleteUserAsync(string appId, string userId, CancellationToken cancellationToken) =>
        _results.DeleteManyAsync(OfUser(appId, userId), cancellationToken);

    public Task<long> DeleteExpiredAsync(DateTime now, CancellationToken cancellationToken) =>
        _results.DeleteManyAsync(Builders<PromptResultDocument>.Filter.Where(r => r.ExpiresAt < now), cancellationToken);

    public Task EnsureIndexesAsync(CancellationToken cancellationToken) =>
        _results.EnsureExpiryIndexAsync(r => r.ExpiresAt, cancellationToken);

    /// <summary>
    /// Moves results that builds with a single collection left in the first part to the part their id hashes to,
    /// and returns how many it moved. Where a newer build has stored a result for the same request, that one is kept.
    /// </summary>
    public Task<long> MoveMisplacedAsync(CancellationToken cancellationToken) =>
        _results.MoveMisplacedAsync(r => r.RequestId.ToString("N"), _ => null, cancellationToken);

    private static FilterDefinition<PromptResultDocument> OfUser(string appId, string userId) =>
        Builders<PromptResultDocument>.Filter.Where(r => r.AppId == appId && r.UserId == userId);
}
