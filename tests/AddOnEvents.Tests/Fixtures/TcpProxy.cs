using System.Collections.Concurrent;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>
/// A loopback TCP proxy that a test can cut and restore, to take a server away from the services without
/// losing its data. While cut, it refuses new connections and has closed every open one. Given a TLS server
/// certificate, it terminates TLS in front of a server that has none, and requires a client certificate.
/// </summary>
public sealed class TcpProxy : IAsyncDisposable
{
    private readonly IPEndPoint _target;
    private readonly SslServerAuthenticationOptions? _tls;
    private readonly ConcurrentQueue<string> _clientCertificates = new();
    private readonly ConcurrentDictionary<TcpClient, byte> _connections = new();
    private readonly CancellationTokenSource _stop = new();
    private TcpListener? _listener;
    private Task _acceptLoop = Task.CompletedTask;

    public TcpProxy(IPEndPoint target, X509Certificate2? tlsCertificate = null)
    {
        _target = target;
        if (tlsCertificate is not null)
        {
            _tls = new SslServerAuthenticationOptions
            {
                ServerCertificate = tlsCertificate,
                ClientCertificateRequired = true,
                // Any client certificate will do: the proxy records who connected, and the tests check the subjects.
                RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate is not null,
            };
        }

        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        Port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
    }

    public int Port { get; }

    public bool IsCut => _listener is null;

    /// <summary>Subjects of the client certificates of the TLS connections accepted so far.</summary>
    public IReadOnlyCollection<string> ClientCertificates => _clientCertificates;

    public void Restore()
    {
        if (_listener is not null)
        {
            return;
        }

        _listener = new TcpListener(IPAddress.Loopback, Port);
        _listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Start();
        var listener = _listener;
        _acceptLoop = Task.Run(() => AcceptAsync(listener));
    }

    public async Task CutAsync()
    {
        var listener = _listener;
        _listener = null;
        listener?.Stop();
        await _acceptLoop;
        foreach (var client in _connections.Keys)
        {
            client.Close();
        }

        _connections.Clear();
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await CutAsync();
        _stop.Dispose();
    }

    private async Task AcceptAsync(TcpListener listener)
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient inbound;
            try
            {
                inbound = await listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
            {
                return;
            }

            _ = Task.Run(() => PipeAsync(inbound));
        }
    }

    private async Task PipeAsync(TcpClient inbound)
    {
        var outbound = new TcpClient();
        _connections[inbound] = 0;
        _connections[outbound] = 0;
        try
        {
            await outbound.ConnectAsync(_target);
            Stream client = inbound.GetStream();
            if (_tls is not null)
            {
                var tls = new SslStream(client);
                client = tls;
                await tls.AuthenticateAsServerAsync(_tls, _stop.Token);
                _clientCertificates.Enqueue(tls.RemoteCertificate!.Subject);
            }

            var a = client.CopyToAsync(outbound.GetStream(), _stop.Token);
            var b = outbound.GetStream().CopyToAsync(client, _stop.Token);
            await Task.WhenAny(a, b);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or OperationCanceledException
            or System.Security.Authentication.AuthenticationException)
        {
            // A cut, a closed peer or a failed TLS handshake ends the pipe; both sides are closed below.
        }
        finally
        {
            inbound.Close();
            outbound.Close();
            _connections.TryRemove(inbound, out _);
            _connections.TryRemove(outbound, out _);
        }
    }
}
