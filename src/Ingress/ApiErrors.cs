using AddOnEvents.Contracts;

namespace AddOnEvents.Ingress;

/// <summary>The one error body of the API: a stable <c>code</c> from <see cref="ErrorCodes"/> and a message that says what to fix.</summary>
public sealed record ApiError(string Code, string Message);

public static class ApiErrors
{
    public static IResult Result(int status, string code, string message) => Results.Json(new ApiError(code, message), statusCode: status);

    /// <summary>Tells whether a path belongs to the JSON API (<c>/api</c>, or the OpenAI-compatible <c>/v1</c>), as opposed to the pages.</summary>
    public static bool IsApiPath(PathString path) => path.StartsWithSegments("/api") || path.StartsWithSegments("/v1");

    public static IResult BadRequest(string message) => Result(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, message);

    /// <summary>Value of <c>error.type</c> in errors of the OpenAI-compatible endpoints.</summary>
    public const string OpenAIErrorType = "addonevents_error";

    /// <summary>Seconds a client waits before retrying after a 503 for a broker or database outage.</summary>
    public const int OutageRetryAfterSeconds = 5;

    public static IResult ServiceUnavailable(HttpContext context, string message)
    {
        context.Response.Headers.RetryAfter = OutageRetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return Result(StatusCodes.Status503ServiceUnavailable, ErrorCodes.ServiceUnavailable, message);
    }

    /// <summary>Writes the error unless a response was already started, as when two authentication schemes both challenge.</summary>
    public static Task WriteAsync(HttpContext context, int status, string code, string message)
    {
        if (context.Response.HasStarted)
        {
            return Task.CompletedTask;
        }

        context.Response.StatusCode = status;

        // OpenAI SDKs read errors of the compatible endpoint in OpenAI's own shape.
        if (context.Request.Path.StartsWithSegments("/v1"))
        {
            MarkNotRetryable(context.Response, status, code);
            return context.Response.WriteAsJsonAsync(new { error = new { message, type = OpenAIErrorType, code, param = (string?)null } });
        }

        return context.Response.WriteAsJsonAsync(new ApiError(code, message));
    }

    /// <summary>
    /// Sets <c>x-should-retry: false</c>, a header that the official OpenAI SDKs check before their status-based retry rules,
    /// on an error that a retry will not fix soon: quota_exceeded, and every 4xx except 408, 409 and a 429 for a rate
    /// limit. Without it an SDK retries a 429 for a used-up quota although the quota resets only hours or days later.
    /// </summary>
    public static void MarkNotRetryable(HttpResponse response, int status, string code)
    {
        bool rateLimit = status == StatusCodes.Status429TooManyRequests && code is ErrorCodes.RateLimited or ErrorCodes.UpstreamRateLimited;
        bool retryable = status is StatusCodes.Status408RequestTimeout or StatusCodes.Status409Conflict || rateLimit;
        if (code == ErrorCodes.QuotaExceeded || (status is >= 400 and < 500 && !retryable))
        {
            response.Headers["x-should-retry"] = "false";
        }
    }
}
