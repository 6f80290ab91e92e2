using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace AddOnEvents.Drill;

public sealed record DrillApp(string AppId, string AppSecret);

/// <summary>Response to one call: the HTTP status (0 when no response came), the parsed body and the error code if any.</summary>
public sealed record ApiResponse(int Status, JsonElement Body, string? Code)
{
    /// <summary>"202", or "503 service_unavailable", or the exception name when no response came.</summary>
    public string Label { get; init; } = "";
}

/// <summary>The public HTTP API of Ingress, as the operator, the host backend and the add-on call it.</summary>
public sealed class DrillApi(Uri ingress, string adminToken) : IDisposable
{
    private readonly HttpClient _http = new(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 1024 })
    {
        BaseAddress = ingress,
        // Longer than Ingress's own publish timeout, so a stalled publish ends as Ingress's 503 and not as a client timeout.
        Timeout = TimeSpan.FromSeconds(30),
    };

    public async Task<DrillApp> CreateAppAsync(CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "api/admin/apps") { Content = JsonContent.Create(new { name = "Cluster drill" }) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
        var answer = await SendAsync(request, cancellationToken);
        Expect(answer, HttpStatusCode.Created, "POST /api/admin/apps");
        return new DrillApp(answer.Body.GetProperty("appId").GetString()!, answer.Body.GetProperty("appSecret").GetString()!);
    }

    public async Task<string> IssueTokenAsync(DrillApp app, string userId, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"api/apps/{app.AppId}/user-tokens")
        {
            Content = JsonContent.Create(new { userId, ttlSeconds = 3600 }),
        };
        request.Headers.Authorization = Basic(app);
        var answer = await SendAsync(request, cancellationToken);
        Expect(answer, HttpStatusCode.OK, "POST /api/apps/{appId}/user-tokens");
        return answer.Body.GetProperty("token").GetString()!;
    }

    public async Task<ApiResponse> RegisterKeyAsync(DrillApp app, string apiKey, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, $"api/apps/{app.AppId}/openai-key")
        {
            Content = JsonContent.Create(new { apiKey }),
        };
        request.Headers.Authorization = Basic(app);
        return await SendAsync(request, cancellationToken);
    }

    /// <summary>Switches the app's add-on on; an Ingress without the switch returns 404, and its apps are always on.</summary>
    public async Task ActivateAddonAsync(DrillApp app, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, $"api/apps/{app.AppId}/addon") { Content = JsonContent.Create(new { active = true }) };
        request.Headers.Authorization = Basic(app);
        var answer = await SendAsync(request, cancellationToken);
        if (answer.Status != 404)
        {
            Expect(answer, HttpStatusCode.OK, "PUT /api/apps/{appId}/addon");
        }
    }

    public async Task<ApiResponse> GetKeyAsync(DrillApp app, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"api/apps/{app.AppId}/openai-key");
        request.Headers.Authorization = Basic(app);
        return await SendAsync(request, cancellationToken);
    }

    public async Task<ApiResponse> SubmitPromptAsync(string userToken, string prompt, bool stream, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "api/prompts") { Content = JsonContent.Create(new { prompt, stream }) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", userToken);
        return await SendAsync(request, cancellationToken);
    }

    public async Task<ApiResponse> GetPromptAsync(string userToken, Guid requestId, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"api/prompts/{requestId}");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", userToken);
        return await SendAsync(request, cancellationToken);
    }

    public void Dispose() => _http.Dispose();

    private async Task<ApiResponse> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await _http.SendAsync(request, cancellationToken);
            string text = await response.Content.ReadAsStringAsync(cancellationToken);
            var body = default(JsonElement);
            string? code = null;
            if (text.Length > 0 && response.Content.Headers.ContentType?.MediaType?.Contains("json", StringComparison.Ordinal) == true)
            {
                body = JsonDocument.Parse(text).RootElement.Clone();
                if (body.ValueKind == JsonValueKind.Object && body.TryGetProperty("code", out var codeProperty))
                {
                    code = codeProperty.GetString();
                }
            }

            int status = (int)response.StatusCode;
            return new ApiResponse(status, body, code) { Label = code is null ? $"{status}" : $"{status} {code}" };
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return new ApiResponse(0, default, null) { Label = ex is TaskCanceledException ? "client timeout" : ex.GetType().Name };
        }
    }

    private static void Expect(ApiResponse answer, HttpStatusCode expected, string call)
    {
        if (answer.Status != (int)expected)
        {
            throw new InvalidOperationException($"{call} returned {answer.Label}; expected {(int)expected}.");
        }
    }

    private static AuthenticationHeaderValue Basic(DrillApp app) =>
        new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(app.AppId + ":" + app.AppSecret)));
}
