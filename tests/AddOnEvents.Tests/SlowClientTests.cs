using System.Net.Sockets;
using System.Net.WebSockets;
using System.Text;
using AddOnEvents.Contracts;
using AddOnEvents.Ingress.Auth;
using AddOnEvents.Ingress.Prompts;
using AddOnEvents.Tests.Fixtures;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace AddOnEvents.Tests;

/// <summary>A hub client that stops reading must not hold up the answers of other users.</summary>
[Collection(SystemCollectionDefinition.Name)]
public sealed class SlowClientTests(SystemFixture system)
{
    private static readonly TimeSpan Patience = SystemFixture.Patience;

    [Fact]
    public async Task StalledConnectionIsClosedAndOthersAnswered()
    {
        var app = await system.CreateAppAsync();
        await system.RegisterActiveKeyAsync(app, "sk-slow-client-" + Guid.NewGuid().ToString("N"));
        string stalledUser = "stalled-" + Guid.NewGuid().ToString("N")[..8];
        using var stalled = await ConnectWithoutReadingAsync(await system.IssueUserTokenAsync(app, stalledUser));
        string readerToken = await system.IssueUserTokenAsync(app, "reader");
        await using var other = await system.ConnectAsync(readerToken);

        // Results for the stalled user, as PromptWorker would route them to this Ingress, until its buffers are full.
        var ingress = system.ServicesOf(nameof(Ingress));
        string pseudonym = ingress.GetRequiredService<UserTokens>().Pseudonym(app.AppId, stalledUser);
        string route = ingress.GetRequiredService<ResultRoute>().RoutingKey;
        var bus = ingress.GetRequiredService<IBus>();
        string text = new('x', 64 * 1024);
        for (int i = 0; i < 200; i++)
        {
            var requestId = Guid.NewGuid();
            await bus.Publish(new PromptCompleted(requestId, requestId, app.AppId, pseudonym, route, text, "stop", new TokenUsage(1, 1, 2),
                DateTimeOffset.UtcNow));
        }

        var answered = await other.WaitForResultAsync(await system.PostPromptAsync(readerToken, "still answered"), Patience);
        bool closed = await WaitForCloseAsync(stalled, Patience);

        Assert.Equal("Echo: still answered", answered.Text);
        Assert.True(closed);
        Assert.Contains(system.Logs.Entries, entry => entry.Contains("[1012]", StringComparison.Ordinal)
            && entry.Contains("closed 1 connections", StringComparison.Ordinal));
    }

    /// <summary>
    /// Opens a hub connection over a socket with a small receive buffer, completes the handshake and then never
    /// reads, as a stuck browser tab would.
    /// </summary>
    private async Task<ClientWebSocket> ConnectWithoutReadingAsync(string token)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096, NoDelay = true };
                await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                return new NetworkStream(socket, ownsSocket: true);
            },
        };
        var socket = new ClientWebSocket();
        var address = new UriBuilder(system.IngressUrl) { Scheme = "ws", Path = "/hubs/addon", Query = "access_token=" + token }.Uri;
        using var connecting = new CancellationTokenSource(Patience);
        await socket.ConnectAsync(address, new HttpMessageInvoker(handler), connecting.Token);
        await socket.SendAsync(Encoding.UTF8.GetBytes("{\"protocol\":\"json\",\"version\":1}\u001e"), WebSocketMessageType.Text, true,
            connecting.Token);
        return socket;
    }

    /// <summary>Waits until the server has closed the connection; reading now drains what the server sent before.</summary>
    private static async Task<bool> WaitForCloseAsync(ClientWebSocket socket, TimeSpan patience)
    {
        using var waiting = new CancellationTokenSource(patience);
        byte[] buffer = new byte[64 * 1024];
        try
        {
            while (true)
            {
                var received = await socket.ReceiveAsync(buffer, waiting.Token);
                if (received.MessageType == WebSocketMessageType.Close)
                {
                    return true;
                }
            }
        }
        catch (WebSocketException)
        {
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
