namespace AddOnEvents.Contracts;

/// <summary>
/// Stable error codes returned by every API and carried by <see cref="PromptFailed"/>.
/// A shipped code keeps its meaning; new cases get new codes.
/// </summary>
public static class ErrorCodes
{
    public const string InvalidRequest = "invalid_request";
    public const string PromptTooLong = "prompt_too_long";
    public const string Unauthorized = "unauthorized";
    public const string Forbidden = "forbidden";
    public const string ModelNotAllowed = "model_not_allowed";
    public const string NotFound = "not_found";
    public const string Conflict = "conflict";
    public const string MethodNotAllowed = "method_not_allowed";
    public const string AddonInactive = "addon_inactive";
    public const string AddonDisabledForUser = "addon_disabled_for_user";
    public const string FreeformDisabled = "freeform_disabled";
    public const string KeyNotActive = "key_not_active";
    public const string RateLimited = "rate_limited";
    public const string TooManyConnections = "too_many_connections";
    public const string QuotaExceeded = "quota_exceeded";
    public const string NoKeyConfigured = "no_key_configured";
    public const string KeyInvalid = "key_invalid";
    public const string KeyUnreadable = "key_unreadable";

    /// <summary>An unverified key stays unverified because the provider could not be reached in any re-check.</summary>
    public const string KeyCheckAbandoned = "key_check_abandoned";
    public const string UpstreamAuthFailed = "upstream_auth_failed";
    public const string UpstreamForbidden = "upstream_forbidden";
    public const string UpstreamQuotaExhausted = "upstream_quota_exhausted";
    public const string UpstreamRateLimited = "upstream_rate_limited";
    public const string UpstreamUnavailable = "upstream_unavailable";
    public const string UpstreamTimeout = "upstream_timeout";
    public const string UpstreamBadRequest = "upstream_bad_request";
    public const string UpstreamInvalidResponse = "upstream_invalid_response";
    public const string ModelNotFound = "model_not_found";
    public const string ContentFiltered = "content_filtered";
    public const string Refused = "refused";
    public const string ServiceUnavailable = "service_unavailable";
    public const string RequestExpired = "request_expired";
    public const string Cancelled = "cancelled";
    public const string InvalidKeyFormat = "invalid_key_format";
    public const string HttpsRequired = "https_required";
    public const string InternalError = "internal_error";
}
