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
        return context.Request.Path.StartsWithSegments("/v1")
            ? context.Response.WriteAsJsonAsync(new { error = new { message, type = "addonevents_error", code, param = (string?)null } })
            : context.Response.WriteAsJsonAsync(new ApiError(code, message));
    }
}
