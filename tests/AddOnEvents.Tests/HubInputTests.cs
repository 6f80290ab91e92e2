using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using AddOnEvents.Tests.Fixtures;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;

namespace AddOnEvents.Tests;

/// <summary>
/// Hub arguments of the wrong shape get a rejection with code <c>invalid_request</c> and the fix, under the same
/// rules as the body of <c>POST /api/prompts</c>, and a request id that is not a GUID gets 400 over HTTP.
/// </summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class HubInputTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Theory]
    [InlineData("""{"prompt":5}""", "$.prompt: it must be a string")]
    [InlineData("""{"prompt":"hi","maxOutputTokens":"20"}""", "maxOutputTokens must be between 1 and 4096.")]
    [InlineData("\"a plain string\"", "must be a JSON object, not an array")]
    [InlineData("[]", "must be a JSON object, not an array")]
    [InlineData("""{"prompt":"hi","bogus":1}""", "Accepted fields: prompt, model, maxOutputTokens, stream,")]
    [InlineData("""{"prompt":"first","Prompt":"second"}""", "more than once")]
    public async Task BadPromptArgumentIsRejected(string json, string expectedPart)
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-hub-shape-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-shape"));

        var result = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", Json(json)).WaitAsync(Patience);

        Assert.Equal(JsonValueKind.Null, result.GetProperty("requestId").ValueKind);
        Assert.Equal("invalid_request", result.GetProperty("code").GetString());
        Assert.Contains(expectedPart, result.GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BadPromptArgumentIsNeverEchoed()
    {
        var app = await system.CreateAppAsync();
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-paster"));
        string canary = "sk-canary-" + Guid.NewGuid().ToString("N");

        var unknownField = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", Json($$"""{"prompt":"hi","{{canary}}":1}"""))
            .WaitAsync(Patience);
        var wrongType = await client.Connection.InvokeAsync<JsonElement>("SubmitPrompt", Json($$"""{"prompt":"hi","model":["{{canary}}"]}"""))
            .WaitAsync(Patience);

        Assert.Equal("invalid_request", unknownField.GetProperty("code").GetString());
        Assert.DoesNotContain("canary", unknownField.GetRawText(), StringComparison.OrdinalIgnoreCase);
        Assert.Equal("invalid_request", wrongType.GetProperty("code").GetString());
        Assert.Contains("$.model: it must be a string", wrongType.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain("canary", wrongType.GetRawText(), StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task SendPromptThrowsCodeForBadShape()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-hub-send-" + Guid.NewGuid().ToString("N"));
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-sender"));

        var thrown = await Record.ExceptionAsync(
            () => client.Connection.InvokeAsync<Guid>("SendPrompt", Json("""{"prompt":5}""")).WaitAsync(Patience));
        var requestId = await client.Connection.InvokeAsync<Guid>("SendPrompt", new { prompt = "still fine", stream = false }).WaitAsync(Patience);
        var result = await client.WaitForResultAsync(requestId, Patience);

        string message = Assert.IsType<HubException>(thrown).Message.Split("HubException: ").Last();
        Assert.StartsWith("invalid_request: ", message, StringComparison.Ordinal);
        Assert.Contains("must be a string", message, StringComparison.Ordinal);
        Assert.Equal("Echo: still fine", result.Text);
    }

    [Fact]
    public async Task RejectedHubCallIsNoError()
    {
        var app = await system.CreateAppAsync();
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-quiet"));

        var thrown = await Record.ExceptionAsync(
            () => client.Connection.InvokeAsync<Guid>("SendPrompt", Json("""{"prompt":""}""")).WaitAsync(Patience));
        await SystemFixture.WaitUntilAsync(() => system.Logs.Entries.Any(IsRejectionLine));

        Assert.IsType<HubException>(thrown);
        Assert.DoesNotContain(system.Logs.Entries, line => line.StartsWith("Error Microsoft.AspNetCore.SignalR", StringComparison.Ordinal));
        Assert.DoesNotContain(system.Logs.Entries, line => IsRejectionLine(line) && line.Contains("invalid_request", StringComparison.Ordinal));
    }

    private static bool IsRejectionLine(string line) =>
        line.StartsWith("Debug AddOnEvents.Ingress.Hubs.HubFailureLogger [1018] Rejected a SendPrompt hub call", StringComparison.Ordinal);

    [Theory]
    [InlineData("\"not-a-guid\"")]
    [InlineData("null")]
    [InlineData("42")]
    [InlineData("""{"requestId":"3f2504e0-4f89-11d3-9a0c-0305e82c3301"}""")]
    public async Task BadCancelArgumentIsRejected(string json)
    {
        var app = await system.CreateAppAsync();
        await using var client = await system.ConnectAsync(await system.IssueUserTokenAsync(app, "hub-canceller"));

        var result = await client.Connection.InvokeAsync<JsonElement>("CancelPrompt", Json(json)).WaitAsync(Patience);
        var valid = await client.Connection.InvokeAsync<JsonElement>("CancelPrompt", Guid.NewGuid()).WaitAsync(Patience);

        Assert.Equal(JsonValueKind.Null, result.GetProperty("requestId").ValueKind);
        Assert.Equal("invalid_request", result.GetProperty("code").GetString());
        Assert.StartsWith("requestId must be a GUID", result.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(JsonValueKind.String, valid.GetProperty("requestId").ValueKind);
    }

    [Theory]
    [InlineData("GET", "/api/prompts/not-a-guid")]
    [InlineData("POST", "/api/prompts/not-a-guid/cancel")]
    public async Task MalformedRequestIdInPathGets400(string method, string path)
    {
        var app = await system.CreateAppAsync();
        using var user = system.CreateClient(SystemFixture.Bearer(await system.IssueUserTokenAsync(app, "path-typist")));

        using var response = await user.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));
        var error = await response.Content.ReadFromJsonAsync<JsonElement>();
        using var unknown = await user.GetAsync($"/api/prompts/{Guid.NewGuid()}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("invalid_request", error.GetProperty("code").GetString());
        Assert.StartsWith("requestId must be a GUID", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }

    /// <summary>Parses JSON text for a hub argument, which the client sends as it is, repeated fields included.</summary>
    private static JsonElement Json(string json) => JsonDocument.Parse(json).RootElement.Clone();
}
