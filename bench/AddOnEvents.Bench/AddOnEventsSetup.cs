using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace AddOnEvents.Bench;

/// <summary>An app created through the admin API, with its key registered and active.</summary>
public sealed record BenchApp(string AppId, string AppSecret);

/// <summary>Prepares AddOnEvents through its public API, as an operator and a host backend would.</summary>
public sealed class AddOnEventsSetup(Uri ingress, string adminToken) : IDisposable
{
    /// <summary>The key the app registers; the fake upstream accepts any key.</summary>
    public const string ProviderKey = "sk-bench-0123456789abcdefghijklmnopqrstuv";

    private readonly HttpClient _http = new(new SocketsHttpHandler { UseProxy = false, MaxConnectionsPerServer = 64 })
    {
        BaseAddress = ingress,
        Timeout = TimeSpan.FromSeconds(30),
    };

    public async Task<BenchApp> CreateAppAsync(CancellationToken cancellationToken)
    {
        using var create = new HttpRequestMessage(HttpMethod.Post, "api/admin/apps")
        {
            Content = JsonContent.Create(new { name = "Benchmark" }),
        };
        create.Headers.Authorization = new AuthenticationHeaderValue("Bearer", adminToken);
        using var created = await _http.SendAsync(create, cancellationToken);
        var app = await ReadAsync(created, HttpStatusCode.Created, cancellationToken);
        var result = new BenchApp(app.GetProperty("appId").GetString()!, app.GetProperty("appSecret").GetString()!);

        using var register = new HttpRequestMessage(HttpMethod.Put, $"api/apps/{result.AppId}/openai-key")
        {
            Content = JsonContent.Create(new { apiKey = ProviderKey }),
        };
        register.Headers.Authorization = Basic(result);
        using var registered = await _http.SendAsync(register, cancellationToken);
        await ReadAsync(registered, HttpStatusCode.Accepted, cancellationToken);

        // KeyWorker checks the key against the fake's /v1/models before prompts may use it.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        string state = "";
        while (DateTime.UtcNow < deadline)
        {
            using var check = new HttpRequestMessage(HttpMethod.Get, $"api/apps/{result.AppId}/openai-key");
            check.Headers.Authorization = Basic(result);
            using var checkedKey = await _http.SendAsync(check, cancellationToken);
            if (checkedKey.StatusCode == HttpStatusCode.OK)
            {
                var key = await ReadAsync(checkedKey, HttpStatusCode.OK, cancellationToken);
                state = key.GetProperty("state").GetString() ?? "";
                if (state == "active")
                {
                    await SwitchOnAsync(result, cancellationToken);
                    return result;
                }
            }

            await Task.Delay(200, cancellationToken);
        }

        throw new InvalidOperationException($"The benchmark key did not become active within 60 s (last state '{state}'); see KeyWorker.log.");
    }

    /// <summary>
    /// Switches the add-on on for the app where Ingress has that switch (PUT /api/apps/{appId}/addon, which needs an
    /// active key); an Ingress without it answers 404 or 405 and serves prompts anyway.
    /// </summary>
    private async Task SwitchOnAsync(BenchApp app, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Put, $"api/apps/{app.AppId}/addon")
        {
            Content = JsonContent.Create(new { active = true }),
        };
        request.Headers.Authorization = Basic(app);
        using var response = await _http.SendAsync(request, cancellationToken);
        if (response.StatusCode is not (HttpStatusCode.NotFound or HttpStatusCode.MethodNotAllowed) && !response.IsSuccessStatusCode)
        {
            string body = await response.Content.ReadAsStringAsync(cancellationToken);
            throw new InvalidOperationException($"PUT /api/apps/{{appId}}/addon returned {(int)response.StatusCode} ({body}).");
        }
    }

    /// <summary>Issues one end-user token per user id through the host backend endpoint.</summary>
    public async Task<string[]> IssueTokensAsync(BenchApp app, string prefix, int count, CancellationToken cancellationToken)
    {
        var tokens = new string[count];
        using var gate = new SemaphoreSlim(32);
        await Task.WhenAll(Enumerable.Range(0, count).Select(async index =>
        {
            await gate.WaitAsync(cancellationToken);
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, $"api/apps/{app.AppId}/user-tokens")
                {
                    Content = JsonContent.Create(new { userId = $"{prefix}-{index}", ttlSeconds = 3600 }),
                };
                request.Headers.Authorization = Basic(app);
                using var response = await _http.SendAsync(request, cancellationToken);
                tokens[index] = (await ReadAsync(response, HttpStatusCode.OK, cancellationToken)).GetProperty("token").GetString()!;
            }
            finally
            {
                gate.Release();
            }
        }));
        return tokens;
    }

    public void Dispose() => _http.Dispose();

    private static AuthenticationHeaderValue Basic(BenchApp app) =>
        new("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(app.AppId + ":" + app.AppSecret)));

    private static async Task<JsonElement> ReadAsync(HttpResponseMessage response, HttpStatusCode expected, CancellationToken cancellationToken)
    {
        string body = await response.Content.ReadAsStringAsync(cancellationToken);
        if (response.StatusCode != expected)
        {
            throw new InvalidOperationException(
                $"{response.RequestMessage?.Method} {response.RequestMessage?.RequestUri?.AbsolutePath} returned {(int)response.StatusCode} ({body}); expected {(int)expected}.");
        }

        return body.Length == 0 ? default : JsonDocument.Parse(body).RootElement.Clone();
    }
}
