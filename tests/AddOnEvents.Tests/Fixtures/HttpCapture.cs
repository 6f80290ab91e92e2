using System.Collections.Concurrent;
using System.Net.Security;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Records the status, headers and body of every HTTP response that test clients receive.</summary>
public sealed class HttpCapture
{
    private readonly ConcurrentQueue<string> _responses = new();

    public IReadOnlyCollection<string> Responses => _responses;

    /// <summary>Check of server certificates for the clients' handlers, such as trust in a throwaway test CA; null for the default.</summary>
    public RemoteCertificateValidationCallback? ServerCertificateValidation { get; set; }

    public DelegatingHandler CreateHandler(HttpMessageHandler inner)
    {
        if (ServerCertificateValidation is { } validate)
        {
            switch (inner)
            {
                case SocketsHttpHandler sockets:
                    sockets.SslOptions.RemoteCertificateValidationCallback = validate;
                    break;
                case HttpClientHandler client:
                    client.ServerCertificateCustomValidationCallback = (request, certificate, chain, errors) =>
                        validate(request, certificate, chain, errors);
                    break;
            }
        }

        return new CapturingHandler(this) { InnerHandler = inner };
    }

    private sealed class CapturingHandler(HttpCapture capture) : DelegatingHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var response = await base.SendAsync(request, cancellationToken);
            await response.Content.LoadIntoBufferAsync(cancellationToken);
            string body = await response.Content.ReadAsStringAsync(cancellationToken);
            string headers = string.Join("; ", response.Headers.Concat(response.Content.Headers)
                .Select(h => $"{h.Key}={string.Join(",", h.Value)}"));
            capture._responses.Enqueue($"{request.Method} {request.RequestUri} -> {(int)response.StatusCode} {headers}\n{body}");
            return response;
        }
    }
}
