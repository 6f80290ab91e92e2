using System.Collections.Concurrent;

namespace AddOnEvents.Tests.Fixtures;

/// <summary>Records the status, headers and body of every HTTP response that test clients receive.</summary>
public sealed class HttpCapture
{
    private readonly ConcurrentQueue<string> _responses = new();

    public IReadOnlyCollection<string> Responses => _responses;

    public DelegatingHandler CreateHandler(HttpMessageHandler inner) => new CapturingHandler(this) { InnerHandler = inner };

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
