using System.Text.Json;
using AddOnEvents.Contracts;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>Reads a JSON request body and turns every way it can be wrong into an <see cref="ApiError"/> response.</summary>
public static class JsonBody
{
    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request) where T : class
    {
        var (value, error) = await ReadOrFailAsync<T>(request);
        return (value, error is null ? null : ApiErrors.Result(error.Status, error.Code, error.Message));
    }

    /// <summary>Reads the body like <see cref="ReadAsync"/>, with the failure as data, for endpoints that write errors in another shape.</summary>
    public static async Task<(T? Value, BodyError? Error)> ReadOrFailAsync<T>(HttpRequest request) where T : class
    {
        if (!request.HasJsonContentType())
        {
            return (null, new BodyError(StatusCodes.Status415UnsupportedMediaType, ErrorCodes.InvalidRequest,
                "Send the body as JSON with the header Content-Type: application/json."));
        }

        try
        {
            var value = await request.ReadFromJsonAsync<T>(request.HttpContext.RequestAborted);
            return value is null ? (null, new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest, "The body is empty; send a JSON object.")) : (value, null);
        }
        catch (JsonException ex)
        {
            // Only the JSON path is echoed, never the exception text, because that can quote the body, and the body
            // can hold a key.
            string where = string.IsNullOrEmpty(ex.Path) || ex.Path == "$" ? "" : $" Check the field at {ex.Path}.";
            return (null, new BodyError(StatusCodes.Status400BadRequest, ErrorCodes.InvalidRequest,
                "The body is not a valid JSON object of the expected shape." + where));
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            bool prompt = request.Path.StartsWithSegments("/api/prompts") || request.Path.StartsWithSegments("/v1");
            return (null, new BodyError(StatusCodes.Status413PayloadTooLarge, prompt ? ErrorCodes.PromptTooLong : ErrorCodes.InvalidRequest,
                prompt ? "The request body is too large. Shorten the prompt." : "The request body is too large."));
        }
    }
}

/// <summary>Why a request body could not be read: the status, the stable code and what to fix.</summary>
public sealed record BodyError(int Status, string Code, string Message);
