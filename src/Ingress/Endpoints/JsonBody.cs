using System.Text.Json;
using AddOnEvents.Contracts;

namespace AddOnEvents.Ingress.Endpoints;

/// <summary>Reads a JSON request body and turns every way it can be wrong into an <see cref="ApiError"/> response.</summary>
public static class JsonBody
{
    public static async Task<(T? Value, IResult? Error)> ReadAsync<T>(HttpRequest request) where T : class
    {
        if (!request.HasJsonContentType())
        {
            return (null, ApiErrors.Result(StatusCodes.Status415UnsupportedMediaType, ErrorCodes.InvalidRequest,
                "Send the body as JSON with the header Content-Type: application/json."));
        }

        try
        {
            var value = await request.ReadFromJsonAsync<T>(request.HttpContext.RequestAborted);
            return value is null ? (null, ApiErrors.BadRequest("The body is empty; send a JSON object.")) : (value, null);
        }
        catch (JsonException)
        {
            // The exception text is not echoed, because it can quote the body, and the body can hold a key.
            return (null, ApiErrors.BadRequest("The body is not a valid JSON object of the expected shape."));
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            bool prompt = request.Path.StartsWithSegments("/api/prompts") || request.Path.StartsWithSegments("/v1");
            return (null, ApiErrors.Result(StatusCodes.Status413PayloadTooLarge, prompt ? ErrorCodes.PromptTooLong : ErrorCodes.InvalidRequest,
                prompt ? "The request body is too large. Shorten the prompt." : "The request body is too large."));
        }
    }
}
